"""A lossless test video whose frame i is solid grey LEVEL_STEP * i."""
import av
import numpy as np

NUM_FRAMES, WIDTH, HEIGHT, FPS = 48, 64, 48, 24
LEVEL_STEP = 5  # frame i is solid grey 5 * i: neighbours stay apart beyond codec error


def write_grey_video(path, num_frames=NUM_FRAMES, width=WIDTH, height=HEIGHT, fps=FPS):
    """Frame i is solid grey LEVEL_STEP * i, lossless H.264 (any container PyAV can write)."""
    with av.open(str(path), mode='w') as container:
        stream = container.add_stream('libx264', rate=fps, options={'qp': '0'})
        stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
        for index in range(num_frames):
            pixels = np.full((height, width, 3), LEVEL_STEP * index, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format='rgb24')))
        container.mux(stream.encode())
    return path
