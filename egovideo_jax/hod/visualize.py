"""Visual check of HOD records: frames with the hand and object boxes, their tracks and the
narrations drawn on them.

    python -m egovideo_jax.hod.visualize --records DIR/records --out DIR/visual [--num 8]

For each of `num` clips spread evenly over the dataset, `{n:03d}_{clip}.png` (a strip of
`STRIP_FRAMES` frames above the HOD and original narrations) and `{n:03d}_{clip}.gif` (every
stored frame, animated), plus `index.html` listing them. Left hand, right hand and object each
have their colour (`TRACK_COLORS`); a solid box was detected in that frame, a dashed one
interpolated; the line behind a box is the path of its centre so far.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from egovideo_jax.records import open_dataset
from egovideo_jax.records.schema import BOX_NAMES, decode_frames

TRACK_COLORS = {'left_hand': (40, 140, 255), 'right_hand': (255, 120, 20),
                'object': (40, 210, 90)}
TRACK_LABELS = {'left_hand': 'left hand', 'right_hand': 'right hand', 'object': 'object'}
DETECTED, INTERPOLATED = 1, 2
STRIP_FRAMES = 6
FRAME_PIXELS = 224  # frames are drawn at this short side, whatever their stored size
TEXT_SIZE = 15
GIF_FRAME_MS = 100
_MARGIN = 8


def _font(size: int = TEXT_SIZE) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], color, width: int,
                      dash: int = 6) -> None:
    left, top, right, bottom = box
    for start, end in (((left, top), (right, top)), ((right, top), (right, bottom)),
                       ((right, bottom), (left, bottom)), ((left, bottom), (left, top))):
        length = max(abs(end[0] - start[0]), abs(end[1] - start[1]))
        for offset in range(0, int(length), 2 * dash):
            a, b = offset / max(length, 1), min(offset + dash, length) / max(length, 1)
            draw.line([(start[0] + (end[0] - start[0]) * a, start[1] + (end[1] - start[1]) * a),
                       (start[0] + (end[0] - start[0]) * b, start[1] + (end[1] - start[1]) * b)],
                      fill=color, width=width)


def annotate_frame(frame: np.ndarray, clip: dict, index: int,
                   pixels: int = FRAME_PIXELS) -> Image.Image:
    """Stored frame `index` of a decoded clip, resized to short side `pixels`, with every
    present track's box at that frame and the path of its centre up to it."""
    image = Image.fromarray(frame)
    scale = pixels / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)),
                         Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    size = np.array([image.width, image.height] * 2, np.float64)
    for name in BOX_NAMES:
        valid = clip['box_valid'][name]
        if valid[index] == 0:
            continue
        boxes = clip['boxes'][name].astype(np.float64) * size
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        path = [tuple(point) for point, seen in zip(centres[:index + 1], valid[:index + 1])
                if seen]
        color = TRACK_COLORS[name]
        if len(path) > 1:
            draw.line(path, fill=color, width=2, joint='curve')
        if valid[index] == DETECTED:
            draw.rectangle(tuple(boxes[index]), outline=color, width=3)
        else:
            _dashed_rectangle(draw, boxes[index], color, width=3)
    return image


def _wrapped(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> list[str]:
    """`text` in lines no wider than `width` pixels."""
    average = max(font.getlength('abcdefghijklmnopqrstuvwxyz') / 26, 1)
    columns = max(int(width / average), 10)
    lines = textwrap.wrap(text, columns) or ['']
    while columns > 10 and any(draw.textlength(line, font=font) > width for line in lines):
        columns -= 2
        lines = textwrap.wrap(text, columns)
    return lines


def _text_panel(width: int, paragraphs: Sequence[tuple[str, str, tuple]]) -> Image.Image:
    """Labelled paragraphs (label, text, colour) on white, wrapped to `width`."""
    font, bold = _font(), _font(TEXT_SIZE + 1)
    line_height = TEXT_SIZE + 6
    measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    blocks = [(label, _wrapped(measure, text, width - 2 * _MARGIN, font), color)
              for label, text, color in paragraphs]
    height = _MARGIN + sum((len(lines) + 1) * line_height + 4 for _, lines, _ in blocks)
    panel = Image.new('RGB', (width, height), 'white')
    draw = ImageDraw.Draw(panel)
    y = _MARGIN
    for label, lines, color in blocks:
        draw.text((_MARGIN, y), label, fill=color, font=bold)
        y += line_height
        for line in lines:
            draw.text((_MARGIN, y), line, fill=(20, 20, 20), font=font)
            y += line_height
        y += 4
    return panel


def _legend(width: int) -> Image.Image:
    font = _font(TEXT_SIZE - 1)
    legend = Image.new('RGB', (width, TEXT_SIZE + 14), (245, 245, 245))
    draw = ImageDraw.Draw(legend)
    x = _MARGIN
    for name in BOX_NAMES:
        draw.rectangle((x, 6, x + 14, 6 + TEXT_SIZE - 2), outline=TRACK_COLORS[name], width=3)
        x += 20
        draw.text((x, 5), TRACK_LABELS[name], fill=(20, 20, 20), font=font)
        x += draw.textlength(TRACK_LABELS[name], font=font) + 18
    draw.text((x, 5), 'solid: detected, dashed: interpolated, line: path so far',
              fill=(90, 90, 90), font=font)
    return legend


def _stack(images: Sequence[Image.Image]) -> Image.Image:
    width = max(image.width for image in images)
    stacked = Image.new('RGB', (width, sum(image.height for image in images)), 'white')
    y = 0
    for image in images:
        stacked.paste(image, (0, y))
        y += image.height
    return stacked


def _narrations(clip: dict) -> list[tuple[str, str, tuple]]:
    hod = [('HOD narration', text, (150, 30, 30)) for text in clip['hod']]
    return hod + [('original narration', clip['narration'] or '(none)', (80, 80, 80))]


def clip_strip(clip: dict, num_frames: int = STRIP_FRAMES,
               pixels: int = FRAME_PIXELS) -> Image.Image:
    """`num_frames` evenly spaced annotated frames side by side, with their times, above the
    legend and the narrations."""
    count = len(clip['frames_jpeg'])
    indices = np.unique(np.linspace(0, count - 1, min(num_frames, count)).round().astype(int))
    frames = decode_frames(clip, indices.tolist())
    tiles = [annotate_frame(frame, clip, int(index), pixels)
             for frame, index in zip(frames, indices)]
    gap = 4
    strip = Image.new('RGB', (sum(tile.width for tile in tiles) + gap * (len(tiles) - 1),
                              tiles[0].height), 'white')
    draw = ImageDraw.Draw(strip)
    x = 0
    for tile, index in zip(tiles, indices):
        strip.paste(tile, (x, 0))
        label = f'{clip["frame_times"][index] - clip["frame_times"][0]:.2f} s'
        draw.text((x + 5, 4), label, fill='white', font=_font(TEXT_SIZE - 2),
                  stroke_width=2, stroke_fill='black')
        x += tile.width + gap
    title = f'{clip["clip_id"]}  ({clip["source"]}, {clip["start"]:.2f}-{clip["end"]:.2f} s)'
    return _stack([_text_panel(strip.width, [(title, '', (20, 20, 20))]), strip,
                   _legend(strip.width), _text_panel(strip.width, _narrations(clip))])


def clip_gif_frames(clip: dict, pixels: int = FRAME_PIXELS) -> list[Image.Image]:
    """Every stored frame annotated, above the HOD narration."""
    frames = decode_frames(clip)
    tiles = [annotate_frame(frame, clip, index, pixels) for index, frame in enumerate(frames)]
    caption = _text_panel(tiles[0].width, _narrations(clip)[:1])
    return [_stack([tile, caption]) for tile in tiles]


def _file_stem(number: int, clip_id: str) -> str:
    return f'{number:03d}_' + re.sub(r'[^A-Za-z0-9_.-]+', '_', clip_id)[:60]


def render_clip(clip: dict, out_dir: str, stem: str) -> tuple[str, str]:
    """Writes `{stem}.png` and `{stem}.gif`; returns their file names."""
    png, gif = f'{stem}.png', f'{stem}.gif'
    clip_strip(clip).save(os.path.join(out_dir, png), optimize=True)
    frames = clip_gif_frames(clip)
    frames[0].save(os.path.join(out_dir, gif), save_all=True, append_images=frames[1:],
                   duration=GIF_FRAME_MS, loop=0, optimize=True)
    return png, gif


def render_records(records_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   num: int = 8) -> str:
    """Renders `num` clips spread over the dataset; returns the path of `index.html`."""
    dataset = open_dataset(os.fspath(records_dir))
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    picks = (np.unique(np.linspace(0, len(dataset) - 1, min(num, len(dataset))).round()
                       .astype(int)) if len(dataset) else [])
    entries = []
    for number, index in enumerate(picks):
        clip = dataset.decode(int(index))
        png, gif = render_clip(clip, out_dir, _file_stem(number, clip['clip_id']))
        entries.append((clip, png, gif))
    index_path = os.path.join(out_dir, 'index.html')
    with open(index_path, 'w', encoding='utf-8') as file:
        file.write(_index_html(os.fspath(records_dir), len(dataset), entries))
    return index_path


def _index_html(records_dir: str, size: int, entries) -> str:
    items = []
    for clip, png, gif in entries:
        hod = ''.join(f'<p class="hod">{html.escape(text)}</p>' for text in clip['hod'])
        items.append(
            f'<section><h2>{html.escape(clip["clip_id"])}</h2>'
            f'<p class="original">original: {html.escape(clip["narration"])}</p>{hod}'
            f'<img src="{html.escape(png)}" alt="frames of {html.escape(clip["clip_id"])}">'
            f'<p><a href="{html.escape(gif)}">animated ({len(clip["frames_jpeg"])} frames)'
            f'</a></p></section>')
    return ('<!doctype html><html><head><meta charset="utf-8"><title>HOD visual check</title>'
            '<style>body{font-family:sans-serif;max-width:1500px;margin:auto}'
            'img{max-width:100%}.hod{color:#962020}.original{color:#555}</style></head><body>'
            f'<h1>HOD visual check</h1><p>{len(entries)} of {size} clips in '
            f'{html.escape(records_dir)}. Boxes: <span style="color:#288cff">left hand</span>, '
            '<span style="color:#ff7814">right hand</span>, <span style="color:#28d25a">'
            'object</span>; solid detected, dashed interpolated.</p>'
            + ''.join(items) + '</body></html>\n')


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m egovideo_jax.hod.visualize',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--records', required=True, help='a HOD record directory')
    parser.add_argument('--out', required=True, help='where the PNG/GIF files and index go')
    parser.add_argument('--num', type=int, default=8, help='clips to render')
    args = parser.parse_args(argv)
    print(render_records(args.records, args.out, args.num))


if __name__ == '__main__':
    main()
