"""Out-of-bounds checks for Triton's interpreter: a kernel that reads or writes past the
tensors it was given fails here with the kernel's name, instead of reading whatever lies
next to them (the interpreter does not check; a GPU ends the process: session 16's fused
forced runs passed the interpreter tests and hit an illegal memory access on an H100).

    with bounds_checked() as checked:
        ... run kernels under TRITON_INTERPRET=1 ...
    assert checked.accesses  # (the checks ran)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Checked:
    kernel: str = ""
    ranges: list = field(default_factory=list)  # (first byte, end) of each argument's storage
    accesses: int = 0  # loads and stores checked


class OutOfBounds(AssertionError):
    pass


@contextlib.contextmanager
def bounds_checked():
    """Every masked-in lane of every load and store of the interpreted kernels run inside
    must address bytes of one of that launch's tensor arguments (their whole storages)."""
    from triton.runtime import interpreter

    checked = Checked()
    builder = interpreter.InterpreterBuilder
    init, load, store = (interpreter.GridExecutor._init_args_hst, builder.create_masked_load,
                         builder.create_masked_store)

    def _init_args_hst(self, args_dev, kwargs):
        args_hst, kwargs_hst = init(self, args_dev, kwargs)
        checked.kernel = getattr(self.fn, "__name__", str(self.fn))
        checked.ranges = []
        for arg in list(args_hst) + list(kwargs_hst.values()):
            if hasattr(arg, "untyped_storage"):
                storage = arg.untyped_storage()
                checked.ranges.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
        return args_hst, kwargs_hst

    def check(ptrs, mask, what):
        addresses = np.broadcast_to(ptrs.data, np.broadcast_shapes(ptrs.data.shape, mask.data.shape))
        live = addresses[np.broadcast_to(mask.data, addresses.shape)].astype(np.uint64)
        if not live.size:
            return
        size = np.dtype(interpreter._get_np_dtype(ptrs.get_element_ty())).itemsize
        inside = np.zeros(live.shape, bool)
        for lo, hi in checked.ranges:
            inside |= (live >= lo) & (live + size <= hi)
        checked.accesses += 1
        if not inside.all():
            bad = int(live[~inside][0])
            near = min(checked.ranges, key=lambda r: min(abs(bad - r[0]), abs(bad - r[1])))
            raise OutOfBounds(f"{checked.kernel}: a {what} of {int((~inside).sum())} lane(s) "
                              f"outside its tensors (first at {bad - near[0]:+d} bytes from "
                              f"the nearest one's start, which is {near[1] - near[0]} bytes)")

    def create_masked_load(self, ptrs, mask, other, *rest):
        check(ptrs, mask, "load")
        return load(self, ptrs, mask, other, *rest)

    def create_masked_store(self, ptrs, value, mask, *rest):
        check(ptrs, mask, "store")
        return store(self, ptrs, value, mask, *rest)

    interpreter.GridExecutor._init_args_hst = _init_args_hst
    builder.create_masked_load, builder.create_masked_store = create_masked_load, create_masked_store
    try:
        yield checked
    finally:
        interpreter.GridExecutor._init_args_hst = init
        builder.create_masked_load, builder.create_masked_store = load, store
