"""Convolution kernels of the batched ACAR head: 3x3 convolutions by Winograd's F(2x2, 3x3).

The head's time goes into 3x3 convolutions of 512 -> 512 channels on a few hundred small maps
(conv2 on 16x16, the HR2O q/k/v/output convs on 7x7). Winograd's minimal filtering (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016) computes each 2x2 output tile from a
4x4 input tile with 16 multiplications per channel pair instead of 36:

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (g: 3x3 filter, d: 4x4 input tile, *: elementwise)

Over all tiles and channels the elementwise product is 16 matrix products ``[tiles, C_in] @
[C_in, C_out]`` (one per tile position), so the convolution becomes one batched GEMM with 2.25x
(14x14 output) or 1.72x (7x7 output padded to 8x8) fewer multiply-adds than the direct
convolution; the transforms are two small GEMMs (16x16 and 4x16) over the data. Convolutions that
read the same input (HR2O's q, k and v) share the input transform and one GEMM.

It is the same linear map as ``F.conv2d`` (exact in real arithmetic: tested in float64 to 1e-10);
in float32 the rounding differs from oneDNN's direct convolution by a few 1e-7 relative. The choice
is static, by shape (:func:`use_winograd`), not by timing the host, so a given model takes the same
path on every machine; small channel counts (the toy demo's 64-channel head) keep ``F.conv2d``,
where the transforms would cost more than the multiply-adds they save.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# minimal channel count (input and output) for the Winograd path: below ~256 the transforms cost
# more than the multiply-adds they save (bench/RESULTS.md, "Batched ACAR head: Winograd 3x3 convolutions")
WINOGRAD_MIN_CHANNELS = 256
# boxes are transformed and multiplied in chunks whose largest Winograd tensor stays under this
# size: the tiles of all 40 boxes of the benchmark (64 MB for conv2) spill the caches, ~20 % slower
WINOGRAD_CHUNK_BYTES = 32 * 2**20

_B_T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]  # input transform
_G = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]  # filter transform
_A_T = [[1, 1, 1, 0], [0, 1, -1, -1]]  # output transform


def _kron(rows: list[list[float]], like: torch.Tensor) -> torch.Tensor:
    """kron(M, M) of a small matrix M, dtype/device of ``like``: the 2-D transform M X M^T of a
    tile flattened row-major is kron(M, M) @ vec(X)."""
    m = torch.tensor(rows, dtype=like.dtype, device=like.device)
    return torch.kron(m, m)


def conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Bias-free 1x1 convolution: x [B, C_in, H, W], weight [C_out, C_in] or [C_out, C_in, 1, 1] -> [B, C_out, H, W].

    Plain ``F.conv2d``: PyTorch's own dispatch (on one thread and fewer than 16 clips one GEMM per
    clip, else oneDNN). No steering (the head used to pass ``dilation=2`` to force oneDNN): which
    backend is faster depends on the CPU, and PyTorch's choice was the faster one on the Intel host.
    """
    return F.conv2d(x, weight.reshape(weight.shape[0], -1, 1, 1))


def use_winograd(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`conv3x3` takes the Winograd path: CPU, float, 3x3 filter, at least
    :data:`WINOGRAD_MIN_CHANNELS` input and output channels, and a non-empty batch."""
    return (x.device.type == "cpu" and x.is_floating_point() and tuple(weight.shape[2:]) == (3, 3)
            and min(weight.shape[0], weight.shape[1]) >= WINOGRAD_MIN_CHANNELS and x.shape[0] > 0)


def winograd_filters(weight: torch.Tensor) -> torch.Tensor:
    """Filter transform G g G^T: weight [C_out, C_in, 3, 3] -> [16, C_in, C_out] (a transposed view)."""
    c_out, c_in = weight.shape[:2]
    # [16, 9] @ [9, C_out * C_in]: one GEMM; viewed back as [16, C_in, C_out] for the batched product
    filters = _kron(_G, weight) @ weight.reshape(c_out * c_in, 9).t()
    return filters.view(16, c_out, c_in).transpose(1, 2)


def winograd_tiles(x: torch.Tensor, padding: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Input transform B^T d B of every 4x4 tile (stride 2) of the zero-padded map:
    x [N, C, H, W] (any layout) -> (V [16, N * th * tw, C], (th, tw, out_h, out_w)).

    The map is padded by ``padding`` and on the bottom/right up to whole tiles; th x tw tiles give
    the 2th x 2tw outputs of which the first out_h x out_w are the convolution's.
    """
    n, channels, height, width = x.shape
    tiles_h, tiles_w, out_h, out_w = _geometry(height, width, padding)
    nhwc = x.permute(0, 2, 3, 1)  # a plain view for channels-last x
    padded = F.pad(nhwc, (0, 0, padding, 2 * tiles_w + 2 - width - padding,
                          padding, 2 * tiles_h + 2 - height - padding))  # [N, 2th + 2, 2tw + 2, C]
    # [N, th, tw, C, 4, 4] view -> [16, N*th*tw*C] (the one gather copy), then a [16, 16] GEMM
    tiles = padded.unfold(1, 4, 2).unfold(2, 4, 2).permute(4, 5, 0, 1, 2, 3).reshape(16, -1)
    transformed = _kron(_B_T, x) @ tiles
    return transformed.view(16, n * tiles_h * tiles_w, channels), (tiles_h, tiles_w, out_h, out_w)


def _geometry(height: int, width: int, padding: int) -> tuple[int, int, int, int]:
    """(th, tw, out_h, out_w): 2x2-output tiles covering a padded 3x3 convolution's output."""
    out_h, out_w = height + 2 * padding - 2, width + 2 * padding - 2
    return (out_h + 1) // 2, (out_w + 1) // 2, out_h, out_w


def winograd_untile(products: torch.Tensor, n: int, geometry: tuple[int, int, int, int]) -> torch.Tensor:
    """Output transform A^T m A: products [16, N * th * tw, C_out] -> [N, C_out, out_h, out_w]
    (channels-last strides; a cropped view when out_h or out_w is odd)."""
    tiles_h, tiles_w, out_h, out_w = geometry
    c_out = products.shape[-1]
    outputs = _kron(_A_T, products) @ products.reshape(16, -1)  # [4, N*th*tw*C_out]: a [4, 16] GEMM
    grid = outputs.view(2, 2, n, tiles_h, tiles_w, c_out).permute(2, 3, 0, 4, 1, 5)  # [N, th, 2, tw, 2, C]
    grid = grid.reshape(n, 2 * tiles_h, 2 * tiles_w, c_out)
    return grid[:, :out_h, :out_w].permute(0, 3, 1, 2)


class FilterCache:
    """The transformed filters of some weights, kept while no weight changes.

    Inference only: when autograd records (grad enabled and a weight requires grad) the filters
    are recomputed every call so gradients reach the weights. A cached entry is reused only for
    the very same weight tensors (identity, storage and in-place version), so loading a state
    dict, ``.to()`` or replacing a parameter all recompute. Held as a plain attribute of the
    module: not in its state dict.
    """

    def __init__(self):
        self._weights: tuple[torch.Tensor, ...] = ()
        self._key: tuple = ()
        self._filters: torch.Tensor | None = None

    def filters(self, weights: list[torch.Tensor]) -> torch.Tensor:
        """[16, C_in, sum C_out] for weights [[C_out_i, C_in, 3, 3], ...]."""
        if torch.is_grad_enabled() and any(w.requires_grad for w in weights):
            return _concatenated_filters(weights)
        key = tuple((w.data_ptr(), w._version, w.dtype, w.device) for w in weights)
        same = len(self._weights) == len(weights) and all(a is b for a, b in zip(self._weights, weights))
        if self._filters is None or not same or key != self._key:
            # a normal tensor even when called under inference_mode, so later no_grad calls may use it
            with torch.inference_mode(False), torch.no_grad():
                self._filters = _concatenated_filters(weights)
            self._weights, self._key = tuple(weights), key
        return self._filters

    def __getstate__(self) -> dict:  # deep copies and pickles start empty rather than carry a stale entry
        return {"_weights": (), "_key": (), "_filters": None}


def _concatenated_filters(weights: list[torch.Tensor]) -> torch.Tensor:
    return winograd_filters(weights[0] if len(weights) == 1 else torch.cat(weights))


def conv3x3(x: torch.Tensor, weights: list[torch.Tensor], padding: int,
            cache: FilterCache | None = None) -> list[torch.Tensor]:
    """Bias-free, stride-1 convolutions of one input with each of ``weights``:
    x [N, C_in, H, W], weights [C_out_i, C_in, k, k] -> [[N, C_out_i, H', W'], ...].

    3x3 filters on large enough maps (:func:`use_winograd`) go through Winograd F(2x2, 3x3): one
    input transform and one batched GEMM for all of them; others through ``F.conv2d``.
    ``cache`` keeps the transformed filters between inference calls.
    """
    if not all(use_winograd(x, w) for w in weights):
        return [F.conv2d(x, w, padding=padding) for w in weights]
    filters = cache.filters(weights) if cache is not None else _concatenated_filters(weights)
    tiles_h, tiles_w = _geometry(x.shape[2], x.shape[3], padding)[:2]
    box_bytes = 16 * tiles_h * tiles_w * max(filters.shape[1:]) * x.element_size()
    parts = []
    for chunk in x.split(max(1, WINOGRAD_CHUNK_BYTES // box_bytes)):  # boxes are independent
        tiles, geometry = winograd_tiles(chunk, padding)
        products = torch.bmm(tiles, filters)  # [16, tiles, sum C_out]
        parts.append(winograd_untile(products, chunk.shape[0], geometry))
    outputs = torch.cat(parts) if len(parts) > 1 else parts[0]
    if len(weights) == 1:  # not a split: callers may apply in-place ops to a lone output
        return [outputs]
    return list(outputs.split([w.shape[0] for w in weights], dim=1))
