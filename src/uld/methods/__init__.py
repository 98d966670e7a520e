"""Unlearning methods: one pure loss function each, registered with `@register_method`."""

from uld.methods.base import LossInputs, MethodSpec, available_methods, get_method, register_method

__all__ = ["LossInputs", "MethodSpec", "available_methods", "get_method", "register_method"]
