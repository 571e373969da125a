"""Pooling layers of the spec tree: torch's max, average and adaptive average pooling, which hold no
tensors but shape the signal between a network's convolutions and its head."""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

from pydantic import PositiveInt, model_validator

from initium.schemas._module import IntOrTuple, _Module
from initium.schemas.spec_layers import _expand


class _PoolNd(_Module):
    """What max and average pooling share: a window of kernel_size taps every `stride` (default:
    kernel_size, as torch), with implicit padding of at most half the window on each side."""

    kernel_size: IntOrTuple
    stride: IntOrTuple | None = None
    padding: IntOrTuple = 0
    ceil_mode: bool = False
    spatial_dims: ClassVar[int]

    @model_validator(mode="after")
    def _check_window(self) -> _PoolNd:
        n = self.spatial_dims
        kernel = _expand(self.kernel_size, n, "kernel_size")
        strides = kernel if self.stride is None else _expand(self.stride, n, "stride")
        if any(v < 1 for v in (*kernel, *strides)):
            raise ValueError(f"kernel_size and stride must be positive, got {self.kernel_size} and {self.stride}")
        # torch refuses padding beyond half the window ("pad should be at most half of kernel size").
        padding = _expand(self.padding, n, "padding")
        if any(p < 0 or p > k // 2 for p, k in zip(padding, kernel, strict=True)):
            raise ValueError(
                f"padding must be between 0 and half of kernel_size {self.kernel_size}, got {self.padding}"
            )
        return self


class _MaxPoolNd(_PoolNd):
    """torch.nn.MaxPoolNd (without return_indices: the spec tree chains tensors, not tuples)."""

    dilation: IntOrTuple = 1

    @model_validator(mode="after")
    def _check_dilation(self) -> _MaxPoolNd:
        if any(v < 1 for v in _expand(self.dilation, self.spatial_dims, "dilation")):
            raise ValueError(f"dilation must be positive, got {self.dilation}")
        return self


class MaxPool1d(_MaxPoolNd):
    type: Literal["max_pool1d"]
    spatial_dims: ClassVar[int] = 1


class MaxPool2d(_MaxPoolNd):
    type: Literal["max_pool2d"]
    spatial_dims: ClassVar[int] = 2


class MaxPool3d(_MaxPoolNd):
    type: Literal["max_pool3d"]
    spatial_dims: ClassVar[int] = 3


class _AvgPoolNd(_PoolNd):
    """torch.nn.AvgPoolNd: count_include_pad counts the zero padding in each window's mean."""

    count_include_pad: bool = True


class AvgPool1d(_AvgPoolNd):
    type: Literal["avg_pool1d"]
    spatial_dims: ClassVar[int] = 1


class _AvgPoolDivisor(_AvgPoolNd):
    """AvgPool2d and AvgPool3d also take divisor_override: every window's sum divided by it."""

    divisor_override: PositiveInt | None = None


class AvgPool2d(_AvgPoolDivisor):
    type: Literal["avg_pool2d"]
    spatial_dims: ClassVar[int] = 2


class AvgPool3d(_AvgPoolDivisor):
    type: Literal["avg_pool3d"]
    spatial_dims: ClassVar[int] = 3


class _AdaptiveAvgPoolNd(_Module):
    """torch.nn.AdaptiveAvgPoolNd: averages each input into `output_size` cells per spatial
    dimension (None keeps that dimension's input size), whatever the input's size; 1 is the global
    average pooling of a ResNet's head."""

    output_size: PositiveInt | list[PositiveInt | None]
    spatial_dims: ClassVar[int]

    @model_validator(mode="after")
    def _check_output_size(self) -> _AdaptiveAvgPoolNd:
        if isinstance(self.output_size, list) and len(self.output_size) != self.spatial_dims:
            raise ValueError(
                f"output_size must be an int or a list of {self.spatial_dims} ints or nulls, got {self.output_size}"
            )
        return self


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    type: Literal["adaptive_avg_pool1d"]
    spatial_dims: ClassVar[int] = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    type: Literal["adaptive_avg_pool2d"]
    spatial_dims: ClassVar[int] = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    type: Literal["adaptive_avg_pool3d"]
    spatial_dims: ClassVar[int] = 3


POOLING = (
    MaxPool1d, MaxPool2d, MaxPool3d, AvgPool1d, AvgPool2d, AvgPool3d, AdaptiveAvgPool1d, AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
)  # fmt: skip
# Their type names: layers without tensors, which the planner registers and a weight's follower passes through.
POOLING_TYPES: tuple[str, ...] = tuple(get_args(cls.model_fields["type"].annotation)[0] for cls in POOLING)
