"""Image helpers: what the reward models see (CLIP's eval transform on tensors, and AR-GRPO's
inputs: to_pil_image's uint8 truncation, transformers' CLIP processor, hpsv2's tensor transform),
uint8 conversion as the FID scripts do it, PNG grids."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from plumbing.files import write_image


def to_uint8(images, truncate=False):
    """(B, 3, H, W) in ~[-1, 1] -> (B, H, W, 3) uint8, exactly as LlamaGen/DiT's FID scripts
    (rounded); truncate=True as AR-GRPO's test.py ((x + 1) / 2 clamped, x 255, astype(uint8))."""
    x = images.float()
    x = (x + 1).mul(0.5).clamp(0, 1) * 255 if truncate else (127.5 * x + 128.0).clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu()


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


def clip_preprocess(x, size, clamp=True):
    """open_clip's eval transform on a batch of tensors: bicubic resize of the short side to
    `size` (antialiased, like PIL), center crop size x size, CLIP mean/std. (B,3,H,W)->(B,3,S,S).
    clamp=False: hpsv2's transform as AR-GRPO ran it (torchvision's Resize on a tensor leaves the
    bicubic overshoot outside [0, 1])."""
    h, w = x.shape[-2:]
    nh = max(size, int(h * size / min(h, w)))        # as torchvision's Resize(size)
    nw = max(size, int(w * size / min(h, w)))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0, 1) if clamp else x
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))   # as CenterCrop
    return clip_normalise(x[..., top:top + size, left:left + size])


def clip_normalise(x):
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# ----------------------------------------------------------------------------- AR-GRPO's inputs
def to_pil_levels(x):
    """What torchvision's to_pil_image does to AR-GRPO's decoded images before CLIP, HPS, MANIQA and
    the judge see them: x * 255 truncated to uint8 (not rounded), here back in [0, 1] as levels
    k / 255 (exact: truncating them again gives k). (B, 3, H, W) -> the same."""
    return (x.float() * 255).to(torch.uint8).float() / 255


def clip_processor_pixels(x, size):
    """transformers' CLIPImageProcessor as AR-GRPO's transformers 4.53 ran it (PIL backend) on
    uint8 levels x: PIL bicubic resize of the short side to `size` (uint8 out), centre crop
    (floor offsets), / 255, CLIP mean / std. (B, 3, H, W) -> (B, 3, S, S)."""
    from PIL import Image
    u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()   # (B, H, W, 3)
    h, w = u8.shape[1:3]
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    top, left = (nh - size) // 2, (nw - size) // 2
    out = [np.asarray(Image.fromarray(im).resize((nw, nh), Image.BICUBIC))
           [top:top + size, left:left + size] for im in u8]
    pixels = torch.from_numpy(np.stack(out).astype(np.float64) / 255).float()  # (B, S, S, 3)
    return clip_normalise(pixels.permute(0, 3, 1, 2).to(x.device))


def clip_pixels(x, size, kind, inputs="float"):
    """The pixels CLIP ('clip') or HPS ('hps') sees, (B, 3, H, W) in [0, 1] -> (B, 3, S, S):
    inputs 'float': open_clip's transform on the float image; 'pil': AR-GRPO's, on to_pil_levels
    images (CLIP: transformers' processor, PIL; HPS: hpsv2's tensor transform, unclamped)."""
    if inputs == "float":
        return clip_preprocess(x, size)
    return clip_processor_pixels(x, size) if kind == "clip" else clip_preprocess(x, size, False)
