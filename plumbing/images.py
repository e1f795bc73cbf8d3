"""Image helpers: uint8 conversion as the FID scripts do it, and PNG grids."""
import math
import os

import numpy as np
import torch


def to_uint8(images):
    """(B, 3, H, W) in ~[-1, 1] -> (B, H, W, 3) uint8, exactly as LlamaGen/DiT's FID scripts."""
    return (127.5 * images.float() + 128.0).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def save_grid(images_u8, path, nrow=None, min_px=0):
    """uint8 (N, H, W, 3) -> one PNG, `nrow` images per row; images smaller than min_px are upscaled
    (nearest) so tiny test images stay visible. Returns the grid (rows*H, nrow*W, 3)."""
    from PIL import Image
    s = max(1, min_px // images_u8.shape[1])
    images_u8 = images_u8.repeat_interleave(s, 1).repeat_interleave(s, 2)
    n, h, w, _ = images_u8.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * h, nrow * w, 3), np.uint8)
    for i, im in enumerate(images_u8.numpy()):
        grid[(i // nrow) * h:(i // nrow + 1) * h, (i % nrow) * w:(i % nrow + 1) * w] = im
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid).save(path)
    return grid
