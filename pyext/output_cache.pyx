"""Arrays whose data comes from a cache of freed blocks (pyext/output_cache.h), for the outputs of
cnncore's kernels: an output of the same size as one freed before reuses its pages instead of
faulting in new ones."""
import os

import numpy as np

from cpython.pycapsule cimport PyCapsule_New

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMem_Handler:
        pass
    object PyDataMem_SetHandler(object handler)
    int _import_array() except -1

cdef extern from "output_cache.h":
    PyDataMem_Handler cnncore_cache_handler
    int cnncore_cache_init(size_t limit) except -1
    int cnncore_cache_after_fork() nogil
    void cnncore_cache_set_limit(size_t limit) nogil
    void cnncore_cache_state(size_t *limit, size_t *held) nogil
    size_t CNNCORE_CACHE_MIN_BYTES
    int CNNCORE_CACHE_SLOTS

_import_array()
cnncore_cache_init(0)
cdef object _handler = PyCapsule_New(<void *>&cnncore_cache_handler, "mem_handler", NULL)

MIN_BYTES = CNNCORE_CACHE_MIN_BYTES
SLOTS = CNNCORE_CACHE_SLOTS


def _through_cache(make, shape, dtype):
    old = PyDataMem_SetHandler(_handler)
    try:
        return make(shape, dtype)
    finally:
        PyDataMem_SetHandler(old)


def empty(shape, dtype):
    """np.empty(shape, dtype), its data from the cache when a freed block of its size is there."""
    return _through_cache(np.empty, shape, dtype)


def zeros(shape, dtype):
    """np.zeros(shape, dtype), its data from the cache (cleared) when a freed block of its size is
    there."""
    return _through_cache(np.zeros, shape, dtype)


def set_limit(size_t nbytes):
    """Keep at most nbytes of freed blocks (0: none); blocks over the new limit are freed now."""
    with nogil:
        cnncore_cache_set_limit(nbytes)


def limit():
    """The most bytes of freed blocks kept."""
    return _state()[0]


def held():
    """Bytes of freed blocks kept now."""
    return _state()[1]


cdef tuple _state():
    cdef size_t limit, held
    with nogil:
        cnncore_cache_state(&limit, &held)
    return limit, held


def _after_fork_in_child():
    cnncore_cache_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
