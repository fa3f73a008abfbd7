"""Convolutions and linear layers with their weights packed once into oneDNN's layout, for
torch on a CPU.

Eager torch hands oneDNN a plain weight tensor on every call, and oneDNN reorders it into its
blocked layout each time (in bf16 with AMX, linear layers too): for a one-step model that is
as much memory traffic as the weights themselves, every image. Packing once, on each layer's
first call (so with the input shape it will see), removes it (the gains, per machine and
model, are in `docs/performance.md`). A ReLU right after a packed layer runs inside oneDNN's
call, and `plus`,
`plus_per_channel` and `times` put a sum, a per-channel shift or a product there too, for the
blocks `fusion` rewrites. Torch.compile's freezing does the same, at the price of a compile
per shape.

A packed weight is a copy. When the plain one was mapped from a weight file (safetensors maps
it), its pages would stay resident beside the copy, since the file's other tensors keep the
mapping alive; they are handed back to the kernel once packed.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from collections.abc import Sequence

import torch
from torch import nn

_MADV_DONTNEED = 4


def supported(dtype: torch.dtype) -> bool:
    """Whether oneDNN layers with packed weights run here in `dtype`."""
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    if dtype == torch.float32:
        return True
    return dtype == torch.bfloat16 and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class _PackedLayer(nn.Module):
    """A layer that packs its weight on its first call (`_pack`), then drops the plain one
    and runs oneDNN's op on the packed copy (`_run`); with `activation = "relu"`, that op
    also applies the ReLU that followed the layer."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, activation: str) -> None:
        super().__init__()
        self.activation = activation
        self.weight: torch.Tensor | None = layer.weight.detach()
        self.bias = layer.bias.detach() if layer.bias is not None else None
        # Diffusers reads a model's dtype and device from its first parameter or buffer; a
        # model made only of convolutions (a tiny autoencoder) would have none left.
        self.register_buffer("dtype_marker", layer.weight.new_empty(0), persistent=False)
        self.packed: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self._packed_for(x))

    def plus(self, x: torch.Tensor, other: torch.Tensor, activation: str = "none"
             ) -> torch.Tensor:
        """The layer's output plus `other` (of its shape), then `activation`, all in one
        oneDNN call: one pass over the output instead of two or three. For a layer without
        an activation of its own (see `fusion`)."""
        assert self.activation == "none", "the sum would come after the activation"
        return self._binary(x, self._packed_for(x), other.to(x.dtype), "add", activation)

    def _packed_for(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            assert self.weight is not None
            self.packed = self._pack(self.weight, x)
            release_file_pages(self.weight)
            self.weight = None
        return self.packed

    def _pack(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _run(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _binary(self, x: torch.Tensor, packed: torch.Tensor, other: torch.Tensor,
                operation: str, activation: str) -> torch.Tensor:
        raise NotImplementedError


class PackedConv2d(_PackedLayer):
    """A `Conv2d` (zero padding) with its weight packed for the input shape it first sees."""

    def __init__(self, conv: nn.Conv2d, activation: str = "none") -> None:
        super().__init__(conv, activation)
        self.padding = [int(p) for p in conv.padding]
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
           activation: str = "none") -> PackedConv2d:
        """A packed convolution (stride 1) of this weight (out, in, kh, kw) and bias, such
        as one derived from another layer's."""
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], (weight.shape[2], weight.shape[3]),
                         padding=padding, bias=bias is not None, device="meta")
        conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
        if bias is not None:
            conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
        return cls(conv, activation)

    def _pack(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        packed: torch.Tensor = torch.ops.mkldnn._reorder_convolution_weight(
            weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape))
        return packed

    def _run(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.ops.mkldnn._convolution_pointwise(
            x, packed, self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.activation, [], "")
        return out

    def plus_per_channel(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """The layer's output plus `shift`, one value per output channel, added to the bias:
        no pass of its own. (A broadcast binary operation would do the same, but oneDNN does
        not promise it for every kernel; a bias it always takes.)"""
        assert self.activation == "none", "the shift would come after the activation"
        bias = shift if self.bias is None else self.bias + shift
        out: torch.Tensor = torch.ops.mkldnn._convolution_pointwise(
            x, self._packed_for(x), bias.to(x.dtype), self.padding, self.stride,
            self.dilation, self.groups, "none", [], "")
        return out

    def _binary(self, x: torch.Tensor, packed: torch.Tensor, other: torch.Tensor,
                operation: str, activation: str) -> torch.Tensor:
        out: torch.Tensor = torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, packed, self.bias, self.padding, self.stride, self.dilation,
            self.groups, operation, None, None if activation == "none" else activation, [],
            None)
        return out


class PackedLinear(_PackedLayer):
    """A `Linear` with its weight packed once for every number of rows."""

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__(linear, activation)
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
           ) -> PackedLinear:
        """A packed linear layer of this weight (out_features, in_features) and bias, such
        as a slice of another layer's; `activation` may also be "gelu" (exact, erf)."""
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                           device="meta")
        linear.weight = nn.Parameter(weight.detach(), requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias.detach(), requires_grad=False)
        return cls(linear, activation)

    def times(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """The layer's output times `other` (its shape), in one oneDNN call."""
        assert self.activation == "none", "the product would come after the activation"
        return self._binary(x, self._packed_for(x), other.to(x.dtype), "mul", "none")

    def _pack(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        packed: torch.Tensor = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        return packed

    def _run(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        # GELU takes its algorithm ("none": exact, as torch's default); ReLU takes none.
        algorithm = "none" if self.activation == "gelu" else ""
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, packed, self.bias,
                                                               self.activation, [], algorithm)
        return out

    def _binary(self, x: torch.Tensor, packed: torch.Tensor, other: torch.Tensor,
                operation: str, activation: str) -> torch.Tensor:
        if activation != "none":
            raise ValueError("oneDNN's linear takes no activation after a binary operation")
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise.binary(
            x, other, packed, self.bias, operation)
        return out


def _packed(module: nn.Module, activation: str) -> nn.Module | None:
    """The packed stand-in for `module`, or None where it has none."""
    if type(module) is nn.Conv2d and module.padding_mode == "zeros" \
            and not isinstance(module.padding, str):
        return PackedConv2d(module, activation)
    if type(module) is nn.Linear:
        return PackedLinear(module, activation)
    return None


def prepack(model: nn.Module) -> int:
    """Replace every plain `Conv2d` (zero padding) and `Linear` under `model` by its packed
    stand-in; returns how many. Where one is followed by a ReLU in an `nn.Sequential` (as
    throughout a tiny autoencoder), the ReLU runs inside it and its place takes an
    `nn.Identity`: one pass over the output instead of two."""
    replaced = 0
    for parent in list(model.modules()):
        # Not named_children(): it skips a module met before, and a tiny autoencoder's blocks
        # put one ReLU twice in a Sequential.
        children = [(name, child) for name, child in parent._modules.items()
                    if child is not None]
        for index, (name, child) in enumerate(children):
            following = children[index + 1][1] if index + 1 < len(children) else None
            # Only a plain Sequential surely feeds each child's output to the next.
            fuse = type(parent) is nn.Sequential and type(following) is nn.ReLU
            packed = _packed(child, "relu" if fuse else "none")
            if packed is None:
                continue
            setattr(parent, name, packed)
            if fuse:
                setattr(parent, children[index + 1][0], nn.Identity())
            replaced += 1
    return replaced


def packed_count(model: nn.Module) -> int:
    """How many packed layers a model holds."""
    return sum(isinstance(m, _PackedLayer) for m in model.modules())


def release_file_pages(tensor: torch.Tensor) -> int:
    """Drop the resident pages of `tensor`'s data when they belong to a file mapping; returns
    the bytes dropped. Harmless to the data: the kernel reads such pages back from the file if
    anything touches them again (weights are never written). Anonymous memory is left alone
    (it is freed with its tensor). Linux only."""
    if sys.platform != "linux" or tensor.device.type != "cpu":
        return 0
    page = mmap.PAGESIZE
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first, last = -(-start // page) * page, end // page * page  # whole pages inside only
    if last <= first or not _in_file_mapping(first, last):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED):
        return 0
    return last - first


def _in_file_mapping(first: int, last: int) -> bool:
    """Whether [first, last) lies in one private mapping of a regular file."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                low, high = (int(v, 16) for v in fields[0].split("-"))
                if low <= first and last <= high:
                    return len(fields) == 6 and fields[5].startswith("/") \
                        and fields[1].endswith("p")
    except OSError:
        pass
    return False


def apply(parts: Sequence[nn.Module]) -> int:
    """Packs every eligible layer of `parts`; returns how many."""
    return sum(prepack(part) for part in parts)
