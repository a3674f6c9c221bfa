"""The PyTorch side of benchmarks/train_step.py: the same co-training step on the independent
reference model (tests/helpers/torch_reference.py), imported with the repository root on
sys.path."""
from __future__ import annotations

import gc
import os
import platform
import sys
from pathlib import Path

from step_timing import PeakRSS, summary, timed_steps

ROOT = Path(__file__).resolve().parents[1]
# Our variant name -> RefConfig constructor name in tests/helpers/torch_reference.py.
REF_CONFIGS = {'tiny': 'tiny', 'B/16': 'b16', 'L/14-336': 'l14_336'}
TORCH_LR, TORCH_BETAS, TORCH_EPS, TORCH_WEIGHT_DECAY = 4e-5, (0.9, 0.999), 1e-8, 0.01


def torch_device():
    import torch
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def bench_torch(variant: str, batch: int, inputs: dict, args) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    sys.path.insert(0, str(ROOT))  # the reference lives in the test helpers
    from tests.helpers.torch_reference import RefConfig, RefEgoVideo

    torch.set_num_threads(args.torch_threads or os.cpu_count())
    device = torch_device()
    torch.manual_seed(args.seed)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    rss = PeakRSS().__enter__()
    model = RefEgoVideo(getattr(RefConfig, REF_CONFIGS[variant])(), 'slowfast').to(device)
    model.train()
    model.logit_scale.requires_grad_(False)  # config.optim.frozen = ['logit_scale']
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:  # config.optim.no_decay: biases, norms, embeddings, gamma
            (no_decay if param.ndim < 2 or 'embedding' in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{'params': decay, 'weight_decay': TORCH_WEIGHT_DECAY},
         {'params': no_decay, 'weight_decay': 0.0}],
        lr=TORCH_LR, betas=TORCH_BETAS, eps=TORCH_EPS, weight_decay=TORCH_WEIGHT_DECAY)

    slow = torch.from_numpy(inputs['slow']).to(device)
    fast = torch.from_numpy(inputs['fast']).to(device)
    tokens = torch.from_numpy(inputs['tokens']).long().to(device)
    labels = torch.arange(batch, device=device)
    visual_params = dict(model.visual.named_parameters())

    def encode_video():
        if args.torch_fast_grads == 'all':
            return model.encode_video(slow, fast)
        # RefEgoVideo.encode_video with the backbone detached in the fast branch: gradients
        # reach the fast adapters through the shared weights but not the shared weights.
        e_slow = model.visual(slow, use_adapters=False)
        frozen = {name: p if '.adapter.' in name else p.detach()
                  for name, p in visual_params.items()}
        e_fast = functional_call(model.visual, frozen, (fast,), {'use_adapters': True})
        return F.normalize(torch.cat([e_slow, e_fast], dim=-1) @ model.slowfast_projection,
                           dim=-1)

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    holder = {}

    def step():
        optimizer.zero_grad(set_to_none=True)
        video = encode_video()
        text = model.encode_text(tokens)
        logits = model.logit_scale.exp() * video @ text.t()
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        loss.backward()
        optimizer.step()
        sync()
        holder['loss'] = loss.detach()

    try:
        timing = timed_steps(step, args.steps, args.warmup, f'[{variant}] PyTorch')
    finally:
        rss.__exit__(None, None, None)
    result = summary(timing, batch)
    result.update(
        device=str(device), peak_rss_increase_bytes=rss.increase,
        cuda_max_memory_allocated_bytes=(torch.cuda.max_memory_allocated(device)
                                         if device.type == 'cuda' else None),
        device_name=(torch.cuda.get_device_name(device) if device.type == 'cuda'
                     else platform.processor() or platform.machine()),
        num_threads=torch.get_num_threads(), dtype='float32', fast_grads=args.torch_fast_grads,
        num_params=sum(p.numel() for p in model.parameters()),
        last_loss=float(holder['loss']))
    # Rebound rather than deleted: step() closes over them. Frees memory before returning.
    model = optimizer = holder = slow = fast = tokens = None
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return result
