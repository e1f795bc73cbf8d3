"""The compiled decode path: `generate(..., compile=True)` runs model.py's `decode_step` through
torch.compile, on caches whose shapes never change, so one graph serves every position.

- On a CPU (inductor's fused C++ kernels): positions stay on the host and each layer's attention is
  one opaque custom op, `attend_prefix`, that writes the step's k, v and reads only the filled
  prefix, exactly as model.KVCache does eagerly; its output shape (that of q) does not depend on
  the position, so the compiled graph does not either.
- On a GPU (plus CUDA graphs, mode="reduce-overhead": one replay per token instead of ~200 kernel
  launches): positions live on the device and `attend_full` reads the whole cache behind the mask,
  as LlamaGen and gpt-fast do, from caches kept at a fixed address between calls (stale entries are
  harmless: a step reads only positions it wrote, the rest is masked). Inductor's Triton code for a
  long cumsum over few rows failed (torch 2.11, H200), so model.sample_next runs its inverse-CDF
  draw eagerly between two graphs there.
tests/test_decode.py pins the compiled tokens to the eager ones and this attention to model.py's.
"""
import torch
import torch.nn.functional as F


def _sdpa(q, k, v, mask):  # as model.sdpa (grouped-query heads repeated)
    if k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@torch.library.custom_op("llamagen::attend_prefix", mutates_args=("kc", "vc"))
def attend_prefix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  kc: torch.Tensor, vc: torch.Tensor,
                  pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """model.KVCache.attend as one op: write k, v (B, Hkv, L, hd) at the host positions pos (L,)
    of the cache kc, vc (B, Hkv, S, hd), attend from q over the filled prefix."""
    start, n = int(pos[0]), int(pos[-1]) + 1  # pos lives on the host: no device sync
    kc[:, :, start:n], vc[:, :, start:n] = k, v
    return _sdpa(q, kc[:, :, :n], vc[:, :, :n], mask[..., :n])


@attend_prefix.register_fake
def _(q, k, v, kc, vc, pos, mask):
    return torch.empty_like(q)


def attend_full(q, k, v, kc, vc, pos, mask):
    """The same with positions on the device: write by index (no host value needed), attend over
    the whole cache behind the mask."""
    # under bf16 autocast k, v are bf16 and the cache has the weights' dtype: cast as the eager
    # write does
    kc.index_copy_(2, pos, k.to(kc.dtype))
    vc.index_copy_(2, pos, v.to(vc.dtype))
    return _sdpa(q, kc, vc, mask)


class PrefixCache:
    """A layer's cache for the compiled CPU step (the interface of model.KVCache)."""

    def __init__(self, k, v):
        self.k, self.v = k, v

    def attend(self, q, k, v, pos, mask):
        return attend_prefix(q, k, v, self.k, self.v, pos, mask)

    def rows(self, n):
        return type(self)(self.k[:n], self.v[:n])


class FullCache(PrefixCache):
    """A layer's cache for CUDA graphs: device positions, the whole cache read."""

    def attend(self, q, k, v, pos, mask):
        return attend_full(q, k, v, self.k, self.v, pos, mask)


_COMPILED = {}
_EAGER = {}


def eager(fn):
    """fn excluded from compilation (torch.compiler.disable), made on first use: torch._dynamo
    takes seconds to import, which no command should pay before it needs it."""
    if fn not in _EAGER:
        _EAGER[fn] = torch.compiler.disable(fn)
    return _EAGER[fn]


def compiled(step, device):
    """`step` through torch.compile, one compiled function per device type. dynamic=False: every
    call has the same shapes, so one graph serves every position."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    if (step, mode) not in _COMPILED:
        _COMPILED[step, mode] = torch.compile(step, dynamic=False, mode=mode)
    return _COMPILED[step, mode]


def decoding(model, step, n_layer, shape, weight):
    """For generate(..., compile=True): (one cache per layer, each k, v of `shape` in the weights'
    dtype and device; the compiled step; the device positions live on)."""
    device, dtype = weight.device, weight.dtype
    if device.type != "cuda":
        caches = [PrefixCache(weight.new_zeros(shape), weight.new_zeros(shape))
                  for _ in range(n_layer)]
        return caches, compiled(step, device), torch.device("cpu")
    # CUDA graphs replay fixed addresses: one cache per shape, kept on the model (not a buffer,
    # so not in its state dict) and reused by every call
    store = model.__dict__.setdefault("_static_kv", {})
    if (shape, dtype) not in store:
        store[shape, dtype] = [(weight.new_zeros(shape), weight.new_zeros(shape))
                               for _ in range(n_layer)]
        for t in (t for kv in store[shape, dtype] for t in kv):
            torch._dynamo.mark_static_address(t)
    return [FullCache(k, v) for k, v in store[shape, dtype]], compiled(step, device), device
