"""Image helpers: CLIP's eval transform on tensors, uint8 conversion as the FID scripts do it, PNG
grids."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from plumbing.files import write_image


def to_uint8(images):
    """(B, 3, H, W) in ~[-1, 1] -> (B, H, W, 3) uint8, exactly as LlamaGen/DiT's FID scripts."""
    return (127.5 * images.float() + 128.0).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def save_grid(images_u8, path, nrow=None, min_px=0):
    """uint8 (N, H, W, 3) -> one image file (written atomically), `nrow` images per row; images
    smaller than min_px are upscaled (nearest) so tiny images stay visible. Returns the grid
    (rows*H, nrow*W, 3)."""
    s = max(1, min_px // images_u8.shape[1])
    images_u8 = images_u8.repeat_interleave(s, 1).repeat_interleave(s, 2)
    n, h, w, _ = images_u8.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * h, nrow * w, 3), np.uint8)
    for i, im in enumerate(images_u8.numpy()):
        grid[(i // nrow) * h:(i // nrow + 1) * h, (i % nrow) * w:(i % nrow + 1) * w] = im
    write_image(path, grid)
    return grid


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # OpenAI CLIP normalisation (also HPSv2)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(x, size):
    """open_clip's eval transform on a batch of tensors: bicubic resize of the short side to
    `size` (antialiased, like PIL), center crop size x size, CLIP mean/std. (B,3,H,W)->(B,3,S,S)"""
    h, w = x.shape[-2:]
    nh = max(size, int(h * size / min(h, w)))        # as torchvision's Resize(size)
    nw = max(size, int(w * size / min(h, w)))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
