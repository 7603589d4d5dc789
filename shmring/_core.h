/*
 * shmring/_core.h -- what the C files of the one extension share besides
 * _atomic.h: error helpers and buffer checks (defined in _core.c), and the
 * module-level functions of its sibling files, which _core.c lists in the
 * module's method table.
 *
 *   _core.c   the module, word atomics, futex, the ring object (SPSC paths)
 *   _mpmc.c   the ring object's multi-producer/-consumer paths (_ring.h)
 *   _array.c  Array: the seqlock and atomic element operations
 */
#ifndef SHMRING_CORE_H
#define SHMRING_CORE_H

#include <Python.h>

/* _core.c */
void raise_layout(const char *fmt, ...);
void *checked_word(Py_buffer *view, Py_ssize_t off, Py_ssize_t width);
int get_writable(PyObject *obj, Py_buffer *view);

/* _array.c */
PyObject *array_seq_read(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *array_seq_begin(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *array_seq_end(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *array_elem_load(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *array_elem_store(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *array_elem_add(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *array_elem_cas(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *array_lock_release(PyObject *m, PyObject *const *args, Py_ssize_t nargs);

#endif /* SHMRING_CORE_H */
