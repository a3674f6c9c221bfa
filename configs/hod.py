"""HOD narration pipeline configs.

    python -m egovideo_jax.hod --config=configs/hod.py:VARIANT [--config.a.b=v]

VARIANT:
  `demo`      builds the embedded demo dataset into `output_dir`: renders the procedural
              egocentric source (`demo.train_clips` + `demo.heldout_clips` clips under
              `output_dir/source/`) and runs the pipeline on it (`epic` detections, `rules`
              narrator) into `output_dir/train` and `output_dir/heldout`.
  `epic`      your videos + EPIC-KITCHENS-100 hand-object detection pickles
              (`detections.root/{video_id}.pkl`, frames numbered at `detections.fps`, default
              the video's frame rate).
  `jsonl`     your videos + detections in our JSONL format (`detections.root/{video_id}.jsonl`).
  `detector`  your videos + a live detector on the stored frames (`detections.detector`:
              `mediapipe` hands or an `onnx` hand-object model at `detections.model_path`;
              optional extras, requirements-hod-detectors.txt).
Any variant but `demo` can filter its clips first (`ego_filter.probe`): see docs/hod_pipeline.md.
Narrators (`narrator.name`): `rules` (offline, deterministic), `openai` (any OpenAI-compatible
chat-completions server: `narrator.base_url`, `narrator.model`, key from the environment
variable `narrator.api_key_env`), `llama_cpp` (a local GGUF at `narrator.model_path`).
"""
import ml_collections

from egovideo_jax.io.choices import check_choice

VARIANTS = ('demo', 'epic', 'jsonl', 'detector')


def get_config(variant: str = 'epic') -> ml_collections.ConfigDict:
    check_choice(variant, VARIANTS, 'configs/hod.py: variant')
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.build_demo = variant == 'demo'

    # Clips: the narration table and the videos (whole `{video_id}.mp4` or 15 s chunks
    # `{video_id}/{k}.mp4`).
    config.input_csv = ''
    config.video_root = ''
    config.chunk_seconds = 15.0
    config.dataset = 'epic' if variant == 'epic' else 'csv'  # when the table has no dataset column
    config.frames_per_clip = 32
    config.short_side = 256
    config.jpeg_quality = 90

    config.detections = ml_collections.ConfigDict(dict(
        source='detector' if variant == 'detector' else 'jsonl' if variant == 'jsonl'
        else 'epic',
        root='',
        fps=0.0,  # frame rate the detection files number frames at; 0: the video's
        hand_threshold=0.5,  # the EPIC-KITCHENS-100 release suggests 0.5 for both
        object_threshold=0.5,
        detector='mediapipe',  # `detector` source: mediapipe | onnx
        model_path=''))  # the ONNX model of the `onnx` detector
    config.tracks = ml_collections.ConfigDict(dict(smoothing=0))  # 0 or an odd window

    config.narrator = ml_collections.ConfigDict(dict(
        name='rules',
        base_url='http://127.0.0.1:8080/v1',  # openai: the server's OpenAI-compatible root
        model='',  # openai: the served model's name
        api_key_env='OPENAI_API_KEY',  # openai: the variable holding the key (none: unset)
        model_path='',  # llama_cpp: the GGUF file
        concurrency=4,  # openai: requests in flight
        timeout=60.0,  # openai: seconds per socket operation
        http_retries=3,  # openai: retries of failed requests, with backoff
        requests_per_second=0.0,  # openai: 0 means no limit
        retries=1,  # answers that fail validation are asked again this often, then `rules`
        temperature=0.2,
        max_tokens=200))

    # The ego-style filter (before `frames`): a linear probe over frozen video features from
    # `python -m egovideo_jax.probe`; clips with P(positive) < threshold are dropped.
    config.ego_filter = ml_collections.ConfigDict(dict(
        probe='',  # the probe.npz; empty: no filter
        checkpoint='',  # the frozen model the probe's features came from; default: the one
                        # the probe file records
        positive='egocentric',  # the probe class that counts as egocentric
        threshold=0.5,
        batch_size=8))

    config.output_dir = ''
    config.cache_dir = ''  # default output_dir/cache; share one to reuse narrations across runs
    config.records_per_shard = 256
    config.record_format = 'tfrecord'  # tfrecord | arrayrecord
    config.workers = 1  # processes for frames, detections and tracks (demo: rendering too)
    config.runner = 'inprocess'  # inprocess | beam
    config.beam_args = ''  # e.g. '--runner=DataflowRunner --project=...'; default DirectRunner
    config.visualize = 8  # clips rendered to output_dir/visual (0: none)
    config.progress = True

    config.demo = ml_collections.ConfigDict(dict(
        train_clips=600, heldout_clips=200, seed=0, size=144,
        num_objects=0))  # 0: all 30 colour x kind objects; fewer makes the actions the task
    config.lock()  # overrides of unknown keys fail, naming the key
    return config
