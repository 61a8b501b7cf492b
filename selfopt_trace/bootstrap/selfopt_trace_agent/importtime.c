/* The import wrapper of importtime.py in C: its twin, for CPython 3.8 to 3.13 (with the GIL) on Linux (import_twin.py builds
 * it into __pycache__; importtime.install uses it when it is there and fresh, else the Python one).
 *
 * importtime.py is the reference and says what an import's span is; this file does the same for the
 * imports that make no record (most of them), and hands everything else to importtime.py's own
 * functions: the agent's modules (_begin), hooks pending on the module (_end), a recorded import
 * (_recorded). Unlike the Python wrapper it runs importlib's own _find_and_load under it instead of
 * a copy of its body: a C call adds no Python frame, so the frame stack is laid out as untraced.
 * What it reads of importtime.py and tracer.py it reads by their names, once at install (the
 * objects, the import threshold) or at each import (tracer._root; _in_startup until it is False).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <structmember.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#ifdef __linux__
#include <poll.h>
#include <signal.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if PY_VERSION_HEX < 0x030D0000 /* its name before 3.13 */
#define PyObject_GetOptionalAttr _PyObject_LookupAttr
#endif
#if PY_VERSION_HEX < 0x030A0000 /* 3.8 and 3.9: what 3.10 added */
static inline PyObject *Py_NewRef(PyObject *obj) { Py_INCREF(obj); return obj; }
static inline PyObject *Py_XNewRef(PyObject *obj) { Py_XINCREF(obj); return obj; }
#endif
#if PY_VERSION_HEX < 0x03090000 /* 3.8: what 3.9 made public */
#define PyObject_Vectorcall _PyObject_Vectorcall
#define PyObject_CallOneArg(function, arg) PyObject_CallFunctionObjArgs((function), (arg), NULL)
#endif

#if LONG_MAX < 9223372036854775807L
#error "nanosecond times are read as C longs: 64 bits"
#endif

static PyObject *original;       /* importlib's _find_and_load */
static PyObject *reference;      /* importtime._find_and_load: for calls this file does not expect */
static PyObject *importtime_globals, *tracer_globals, *sys_globals;
static PyTypeObject *frame_type; /* tracer.ImportFrame */
static PyTypeObject *span_type;  /* tracer.Span */
static PyObject *current;        /* tracer._current, the current span's ContextVar (imports aside) */
/* This thread's innermost import under way (a strong reference), each frame holding the one it is
 * nested in (`below`): the twin's store of what tracer._imports holds for the Python wrapper, without
 * a thread ident's int, a hash and a dict's insertion and deletion an import (~1,300 instructions). */
static _Thread_local PyObject *innermost;
static PyObject *pending;        /* lazy._pending: module name -> hooks to arm at its import */
static PyObject *bookkeeping;    /* importtime._bookkeeping: [imports counted, ns each] */
static PyObject *edge_reads;     /* importtime._edge_reads: [ns, 1] */
static PyObject *record_costs;   /* importtime._record_costs: [ns, 1] */
static PyObject *buffer;         /* tracer._buffer, where a recorded import waits for the flush */
static PyObject *mark_kept, *flush, *start_flusher, *py_import_line; /* tracer's */
static long flush_records;       /* tracer.FLUSH_RECORDS */
static PyObject *samples, *calibrate, *py_begin, *py_end, *py_recorded;
static PyObject *agent_prefix, *unset, *error, *empty, *zero, *one;
static PyObject *s_modules, *s_in_startup, *s_root, *s_deferred, *s_child_ns, *s_spec, *s_initializing;
static PyObject *s_flush_due_ns, *s_flusher_started, *s_flusher_from_ns, *s_id_text, *s_span_id, *s_trace_id, *s_builtins;
static PyObject *s_generation, *s_collected;

/* Offsets of ImportFrame's slots: set directly, as the Python wrapper's specialized bytecode does. */
static int startup_over;        /* importtime._in_startup seen False */
static long long threshold;     /* importtime._threshold_ns, set before install */

static Py_ssize_t parent_at, keep_at, child_ns_at, span_id_at, trace_id_at, outer_at, below_at, start_ns_at,
    cpu0_at, status_at, began_ns_at, span_deferred_at;

#define SLOT(obj, at) (*(PyObject **)((char *)(obj) + (at)))

static inline void
set_slot(PyObject *obj, Py_ssize_t at, PyObject *value) /* steals `value` */
{
    PyObject *old = SLOT(obj, at);
    SLOT(obj, at) = value;
    Py_XDECREF(old);
}

static inline long long
clock_ns(clockid_t clock) /* time.time_ns(), time.thread_time_ns(): the same clocks */
{
    struct timespec now;
    clock_gettime(clock, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* An import is timed when importlib will load its module: not in sys.modules, or still running its
 * body (`__spec__._initializing`), as importtime.py decides. -1: an error is set. */
static int
needs_loading(PyObject *modules, PyObject *name)
{
    PyObject *module = PyDict_GetItemWithError(modules, name), *spec, *initializing;
    int flag;
    if (module == NULL)
        return PyErr_Occurred() ? -1 : 1;
    Py_INCREF(module); /* a module's __getattr__ may take it out of sys.modules */
    flag = PyObject_GetOptionalAttr(module, s_spec, &spec);
    Py_DECREF(module);
    if (flag <= 0)
        return flag;
    flag = PyObject_GetOptionalAttr(spec, s_initializing, &initializing);
    Py_DECREF(spec);
    if (flag <= 0)
        return flag;
    flag = PyObject_IsTrue(initializing);
    Py_DECREF(initializing);
    return flag;
}

static int
is_deferred(PyObject *span)
{
    PyObject *deferred;
    int flag;
    if (Py_TYPE(span) == frame_type)
        return 1;
    if (Py_TYPE(span) == span_type && (deferred = SLOT(span, span_deferred_at)) != NULL) /* a Span: its slot */
        return PyObject_IsTrue(deferred);
    deferred = PyObject_GetAttr(span, s_deferred);
    if (deferred == NULL)
        return -1;
    flag = PyObject_IsTrue(deferred);
    Py_DECREF(deferred);
    return flag;
}

static inline int
calibrating(void)
{
    return PyObject_Not(PyList_GET_ITEM(bookkeeping, 1));
}

/* cell[0] += ns: time the agent spent, timed (a [ns, 1] cell of tracer.counted_overhead). */
static int
count_ns(PyObject *cell, long long ns)
{
    PyObject *sum, *add = PyLong_FromLongLong(ns);
    if (add == NULL)
        return -1;
    sum = PyNumber_Add(PyList_GET_ITEM(cell, 0), add);
    Py_DECREF(add);
    return sum == NULL ? -1 : PyList_SetItem(cell, 0, sum);
}

static int
call_python(PyObject *function, PyObject *const *args, size_t nargs)
{
    PyObject *result = PyObject_Vectorcall(function, args, nargs, NULL);
    Py_XDECREF(result);
    return result == NULL ? -1 : 0;
}

/* importtime._pop: the import is over, the one it is nested in is its thread's innermost again. */
static void
pop(PyObject *frame)
{
    PyObject *below = SLOT(frame, below_at), *nested;
    SLOT(frame, below_at) = Py_NewRef(Py_None); /* (an ended frame keeps no other alive) */
    if (innermost == frame) {
        innermost = below == Py_None ? NULL : below; /* below's reference moves there */
        if (below == Py_None)
            Py_DECREF(below);
        Py_DECREF(frame);
        return;
    }
    /* Imports nested in it ended later (greenlets that switched inside a module's body): out of their chain. */
    for (nested = innermost; nested != NULL && SLOT(nested, below_at) != frame;)
        nested = SLOT(nested, below_at) == Py_None ? NULL : SLOT(nested, below_at);
    if (nested != NULL)
        set_slot(nested, below_at, below);
    else
        Py_DECREF(below);
}

/* importtime._begin: the import's frame, made current; None for start-up's imports. `entered`: when
 * the wrapper was called, while the bookkeeping's cost is calibrated (else 0). */
static PyObject *
begin(PyObject *name, long long entered)
{
    long long start_ns;
    int match = PyUnicode_Tailmatch(name, agent_prefix, 0, PY_SSIZE_T_MAX, -1), in_startup, cpu_edge;
    PyObject *outer, *parent, *frame, *start;
    if (match != 0)
        return match < 0 ? NULL : PyObject_CallOneArg(py_begin, name);
    if (PyContextVar_Get(current, NULL, &outer) < 0)
        return NULL;
    if (innermost != NULL && SLOT(innermost, outer_at) == outer) /* current_span() */
        parent = innermost;
    else if (outer == Py_None && (parent = PyDict_GetItemWithError(tracer_globals, s_root)) == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(outer);
            return NULL;
        }
        parent = Py_None;
    }
    else if (outer != Py_None)
        parent = outer;
    Py_INCREF(parent);
    if (!startup_over) /* importtime.startup_over() sets _in_startup to False, for good */
        startup_over = !(in_startup = PyObject_IsTrue(PyDict_GetItem(importtime_globals, s_in_startup) ?: Py_True));
    else
        in_startup = 0;
    if (parent == Py_None || in_startup) {
        Py_DECREF(parent);
        Py_DECREF(outer);
        return in_startup < 0 ? NULL : Py_NewRef(Py_None);
    }
    cpu_edge = is_deferred(parent);
    if (cpu_edge < 0 || (frame = frame_type->tp_alloc(frame_type, 0)) == NULL) {
        Py_DECREF(parent);
        Py_DECREF(outer);
        return NULL;
    }
    cpu_edge = !cpu_edge; /* an outermost import's CPU edges (importtime._begin) */
    if (entered)
        set_slot(frame, began_ns_at, PyLong_FromLongLong(entered));
    set_slot(frame, parent_at, parent);
    set_slot(frame, keep_at, Py_NewRef(Py_False));
    set_slot(frame, child_ns_at, Py_NewRef(zero));
    set_slot(frame, span_id_at, Py_NewRef(empty));
    set_slot(frame, trace_id_at, Py_NewRef(empty));
    set_slot(frame, status_at, Py_NewRef(unset));
    set_slot(frame, outer_at, outer);
    set_slot(frame, below_at, innermost != NULL ? innermost : Py_NewRef(Py_None)); /* innermost's reference moves */
    innermost = Py_NewRef(frame); /* the current span (current_span) until its end */
    start_ns = clock_ns(CLOCK_REALTIME);
    start = PyLong_FromLongLong(start_ns);
    set_slot(frame, start_ns_at, start);
    set_slot(frame, cpu0_at, cpu_edge ? PyLong_FromLongLong(clock_ns(CLOCK_THREAD_CPUTIME_ID)) : Py_NewRef(zero));
    if (start == NULL || SLOT(frame, cpu0_at) == NULL || (cpu_edge && count_ns(edge_reads, clock_ns(CLOCK_REALTIME) - start_ns) < 0)) {
        pop(frame);
        Py_DECREF(frame);
        return NULL;
    }
    return frame;
}

static int
add_child_time(PyObject *parent, long long cumulative)
{
    PyObject *sum, *old, *add = PyLong_FromLongLong(cumulative);
    int failed;
    if (add == NULL)
        return -1;
    if (Py_TYPE(parent) == frame_type) {
        sum = PyNumber_Add(SLOT(parent, child_ns_at), add);
        Py_DECREF(add);
        if (sum == NULL)
            return -1;
        set_slot(parent, child_ns_at, sum);
        return 0;
    }
    if ((old = PyObject_GetAttr(parent, s_child_ns)) == NULL) {
        Py_DECREF(add);
        return -1;
    }
    sum = PyNumber_Add(old, add);
    Py_DECREF(old);
    Py_DECREF(add);
    if (sum == NULL)
        return -1;
    failed = PyObject_SetAttr(parent, s_child_ns, sum);
    Py_DECREF(sum);
    return failed;
}

/* bookkeeping[0] += 1: one more import whose bookkeeping costs the calibrated ns each. */
static int
count_import(void)
{
    PyObject *count = PyNumber_Add(PyList_GET_ITEM(bookkeeping, 0), one);
    return count == NULL ? -1 : PyList_SetItem(bookkeeping, 0, count);
}

/* tracer global `name` as a C long (a clock, a flag), or -1 with an exception set. */
static long
tracer_long(PyObject *name)
{
    PyObject *value = PyDict_GetItemWithError(tracer_globals, name);
    if (value == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_AttributeError, "no %U to read", name);
        return -1;
    }
    return PyLong_AsLong(value);
}

/* tracer._mark_kept: `parent` (an import's frame, or a deferred span) and those it is in are written,
 * as something recorded hangs under it */
static int
keep(PyObject *parent)
{
    int deferred;
    while (Py_TYPE(parent) == frame_type && SLOT(parent, keep_at) == Py_False) {
        set_slot(parent, keep_at, Py_NewRef(Py_True));
        parent = SLOT(parent, parent_at);
    }
    if (parent != Py_None && Py_TYPE(parent) != frame_type) { /* a span: kept too if it is deferred */
        if ((deferred = is_deferred(parent)) < 0 || (deferred && call_python(mark_kept, &parent, 1) < 0))
            return -1;
    }
    return 0;
}

/* importtime._recorded for an import nested in a span or another import (no CPU edges: those go to
 * _recorded): its ancestors kept, the frame left in tracer's buffer for the flush to write
 * (tracer.import_line), its cost, the flush when one is due. No Python frame: a call into _recorded
 * from here cost ~1.7 us a record in a pytest run. */
static int
record(PyObject *frame, PyObject *name, long long t2)
{
    PyObject *parent = SLOT(frame, parent_at), *end, *entry, *args[1];
    long due, from;
    int failed;
    if (keep(parent) < 0)
        return -1;
    if ((end = PyLong_FromLongLong(t2)) == NULL)
        return -1;
    entry = PyTuple_Pack(4, frame, name, end, empty);
    Py_DECREF(end);
    if (entry == NULL)
        return -1;
    failed = PyList_Append(buffer, entry);
    Py_DECREF(entry);
    if (failed < 0 || count_ns(record_costs, clock_ns(CLOCK_REALTIME) - t2) < 0 || count_import() < 0)
        return -1;
    /* after the record's cost is counted: a flush counts its own */
    if ((due = tracer_long(s_flush_due_ns)) == -1 && PyErr_Occurred())
        return -1;
    if (t2 > due || PyList_GET_SIZE(buffer) > flush_records) {
        args[0] = Py_False; /* blocking=False */
        return call_python(flush, args, 1);
    }
    if (PyDict_GetItem(tracer_globals, s_flusher_started) != Py_False)
        return 0;
    if ((from = tracer_long(s_flusher_from_ns)) == -1 && PyErr_Occurred())
        return -1;
    return t2 < from ? 0 : call_python(start_flusher, NULL, 0); /* once the process is old enough */
}

/* importtime._end: the span's end, or the Python function when hooks wait on the module or the
 * frame is not an import's. 1 for an import the bookkeeping's calibration times: `*spent` is its
 * bookkeeping before the load less the clock at the load's end (find_and_load adds its own end). */
static int
end(PyObject *frame, PyObject *name, long long *spent)
{
    int hooked = PyDict_Contains(pending, name), deferred;
    long long cpu1 = 0, t1, t2, read;
    PyObject *parent, *cpu0, *keep, *args[4];
    if (hooked < 0)
        return -1;
    if (hooked || (frame != Py_None && Py_TYPE(frame) != frame_type)) {
        args[0] = frame;
        args[1] = name;
        return call_python(py_end, args, 2);
    }
    if (frame == Py_None)
        return 0;
    t2 = clock_ns(CLOCK_REALTIME);
    pop(frame);
    parent = SLOT(frame, parent_at);
    t1 = PyLong_AsLong(SLOT(frame, start_ns_at)); /* 64 bits here; AsLongLong goes through a byte array */
    if ((deferred = is_deferred(parent)) < 0 || (deferred && add_child_time(parent, t2 - t1) < 0))
        return -1;
    keep = SLOT(frame, keep_at);
    if (t2 - t1 >= threshold || (keep != Py_False && PyObject_IsTrue(keep))) {
        cpu0 = SLOT(frame, cpu0_at);
        if (cpu0 == zero || !PyObject_IsTrue(cpu0))
            return record(frame, name, t2);
        /* an outermost import: the end edge, for a recorded import only (importtime._end) */
        cpu1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
        read = clock_ns(CLOCK_REALTIME);
        if (count_ns(edge_reads, read - t2) < 0)
            return -1;
        t2 = read;
        args[0] = frame;
        args[1] = name;
        if ((args[2] = PyLong_FromLongLong(t2)) == NULL || (args[3] = PyLong_FromLongLong(cpu1)) == NULL) {
            Py_XDECREF(args[2]);
            return -1;
        }
        deferred = call_python(py_recorded, args, 4);
        Py_DECREF(args[2]);
        Py_DECREF(args[3]);
        return deferred;
    }
    if (calibrating() && SLOT(frame, began_ns_at) != NULL) {
        *spent = t1 - PyLong_AsLong(SLOT(frame, began_ns_at)) - t2;
        return 1;
    }
    return count_import();
}

/* tracer.calibrate(bookkeeping, samples, spent): one of the first imports' bookkeeping, timed. */
static int
calibrate_import(long long spent)
{
    PyObject *args[3] = {bookkeeping, samples, PyLong_FromLongLong(spent)};
    int failed;
    if (args[2] == NULL)
        return -1;
    failed = call_python(calibrate, args, 3);
    Py_DECREF(args[2]);
    return failed;
}

/* importlib._bootstrap._find_and_load(name, import_) in its place. */
static PyObject *
find_and_load(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* sys.modules as importlib reads it (PySys_GetObject makes a str of its name at each call) */
    PyObject *modules = PyDict_GetItem(sys_globals, s_modules), *frame, *result, *type, *value, *traceback;
    /* the first imports' bookkeeping is timed from here to the end (calibrate_import) */
    long long entered = calibrating() ? clock_ns(CLOCK_REALTIME) : 0, spent = 0;
    int needed, ended;
    if (nargs != 2 || modules == NULL || !PyUnicode_Check(args[0])) /* no import statement calls so: raises there */
        return PyObject_Vectorcall(reference, args, nargs, NULL);
    if (!PyDict_CheckExact(modules)) /* another mapping in sys.modules: not timed (the store is this file's) */
        return PyObject_Vectorcall(original, args, nargs, NULL);
    if ((needed = needs_loading(modules, args[0])) <= 0)
        return needed < 0 ? NULL : PyObject_Vectorcall(original, args, 2, NULL);
    if ((frame = begin(args[0], entered)) == NULL)
        return NULL;
    result = PyObject_Vectorcall(original, args, 2, NULL);
    if (result == NULL) { /* (a failed import is no sample of the bookkeeping's cost) */
        PyErr_Fetch(&type, &value, &traceback);
        if (Py_TYPE(frame) == frame_type)
            set_slot(frame, status_at, Py_NewRef(error));
        if (end(frame, args[0], &spent) < 0) { /* as a `finally` that raises: its exception replaces the import's */
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
        }
        else
            PyErr_Restore(type, value, traceback);
        Py_DECREF(frame);
        return NULL;
    }
    if ((ended = end(frame, args[0], &spent)) < 0)
        Py_CLEAR(result);
    Py_DECREF(frame);
    /* the sample ends after the frame's release: all of the wrapper's work but the load */
    if (ended == 1 && calibrate_import(spent + clock_ns(CLOCK_REALTIME)) < 0)
        Py_CLEAR(result);
    return result;
}

static Py_ssize_t
slot_offset(PyTypeObject *type, const char *slot)
{
    PyObject *descriptor = PyObject_GetAttrString((PyObject *)type, slot);
    Py_ssize_t offset = -1;
    if (descriptor == NULL)
        return -1;
    if (Py_TYPE(descriptor) == &PyMemberDescr_Type && ((PyMemberDescrObject *)descriptor)->d_member->type == T_OBJECT_EX)
        offset = ((PyMemberDescrObject *)descriptor)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, slot);
    Py_DECREF(descriptor);
    return offset;
}

static PyObject *
global(PyObject *globals, const char *name)
{
    PyObject *value = PyDict_GetItemString(globals, name);
    if (value == NULL)
        PyErr_Format(PyExc_AttributeError, "no %s to read", name);
    return Py_XNewRef(value);
}

static PyMethodDef find_and_load_def = {"_find_and_load", (PyCFunction)(void (*)(void))find_and_load, METH_FASTCALL,
                                        "importlib's _find_and_load, the import timed (importtime.c)."};

/* install(importtime_module) -> the wrapper, to put in importlib's place; reads the module's globals. */
static PyObject *
install(PyObject *module, PyObject *importtime)
{
    PyObject *tracer, *threshold_ns, *flush_records_value = NULL;
    if (original != NULL)
        return PyErr_Format(PyExc_RuntimeError, "installed already");
    importtime_globals = Py_NewRef(PyModule_GetDict(importtime));
    if ((tracer = global(importtime_globals, "tracer")) == NULL)
        return NULL;
    sys_globals = Py_NewRef(PyModule_GetDict(PyImport_AddModule("sys")));
    tracer_globals = Py_NewRef(PyModule_GetDict(tracer));
    Py_DECREF(tracer);
    if ((original = global(importtime_globals, "_original")) == NULL || (reference = global(importtime_globals, "_find_and_load")) == NULL ||
        (frame_type = (PyTypeObject *)global(importtime_globals, "_Frame")) == NULL ||
        (span_type = (PyTypeObject *)global(tracer_globals, "Span")) == NULL ||
        (current = global(tracer_globals, "_current")) == NULL || (pending = global(importtime_globals, "_pending")) == NULL ||
        (bookkeeping = global(importtime_globals, "_bookkeeping")) == NULL || (samples = global(importtime_globals, "_samples")) == NULL ||
        (edge_reads = global(importtime_globals, "_edge_reads")) == NULL ||
        (record_costs = global(importtime_globals, "_record_costs")) == NULL || (buffer = global(tracer_globals, "_buffer")) == NULL ||
        (mark_kept = global(tracer_globals, "_mark_kept")) == NULL || (flush = global(tracer_globals, "flush")) == NULL ||
        (py_import_line = global(tracer_globals, "python_import_line")) == NULL ||
        (start_flusher = global(tracer_globals, "_start_flusher")) == NULL ||
        (flush_records_value = global(tracer_globals, "FLUSH_RECORDS")) == NULL ||
        (py_begin = global(importtime_globals, "_begin")) == NULL || (py_end = global(importtime_globals, "_end")) == NULL ||
        (py_recorded = global(importtime_globals, "_recorded")) == NULL || (calibrate = global(tracer_globals, "calibrate")) == NULL ||
        (agent_prefix = global(importtime_globals, "_AGENT")) == NULL || (error = global(tracer_globals, "ERROR")) == NULL ||
        (unset = global(tracer_globals, "UNSET")) == NULL ||
        (threshold_ns = global(importtime_globals, "_threshold_ns")) == NULL)
        goto failed;
    threshold = PyLong_AsLong(threshold_ns);
    Py_DECREF(threshold_ns);
    flush_records = PyLong_AsLong(flush_records_value);
    Py_CLEAR(flush_records_value);
    if ((threshold == -1 || flush_records == -1) && PyErr_Occurred())
        goto failed;
    if (!PyType_Check(frame_type) || !PyType_Check(span_type) || !PyDict_CheckExact(pending) || !PyList_CheckExact(bookkeeping) || PyList_GET_SIZE(bookkeeping) != 2 ||
        !PyList_CheckExact(edge_reads) || PyList_GET_SIZE(edge_reads) != 2 || !PyList_CheckExact(record_costs) ||
        PyList_GET_SIZE(record_costs) != 2 || !PyList_CheckExact(buffer)) {
        PyErr_SetString(PyExc_TypeError, "importtime's state is not what importtime.c reads");
        goto failed;
    }
    if ((parent_at = slot_offset(frame_type, "parent")) < 0 || (keep_at = slot_offset(frame_type, "keep")) < 0 || (child_ns_at = slot_offset(frame_type, "child_ns")) < 0 ||
        (span_id_at = slot_offset(frame_type, "_span_id")) < 0 || (trace_id_at = slot_offset(frame_type, "_trace_id")) < 0 || (outer_at = slot_offset(frame_type, "outer")) < 0 ||
        (below_at = slot_offset(frame_type, "below")) < 0 ||
        (start_ns_at = slot_offset(frame_type, "start_ns")) < 0 || (cpu0_at = slot_offset(frame_type, "cpu0")) < 0 || (status_at = slot_offset(frame_type, "status")) < 0 ||
        (began_ns_at = slot_offset(frame_type, "began_ns")) < 0 || (span_deferred_at = slot_offset(span_type, "deferred")) < 0)
        goto failed;
    return PyCFunction_NewEx(&find_and_load_def, module, NULL);
failed:
    Py_XDECREF(flush_records_value);
    Py_CLEAR(original);
    return NULL;
}

/* runqueue_ns() -> the calling thread's time queued for a CPU (/proc/thread-self/schedstat's second
 * field), or None where it cannot be read. With the GIL held: os.open, os.read and os.close each hand
 * it over and take it back, and a thread ending beside others (a thread-per-request server's) waited
 * for them three times (~70 us a thread, docs/benchmarks.md); the first read of a new thread's file is
 * ~30 us of the kernel's. process.thread_clocks' reader when the twin is there. */
static PyObject *
runqueue_ns(PyObject *module, PyObject *unused)
{
    char text[128];
    char *end;
    ssize_t size;
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        Py_RETURN_NONE;
    size = read(fd, text, sizeof text - 1);
    close(fd);
    if (size <= 0)
        Py_RETURN_NONE;
    text[size] = '\0';
    strtoull(text, &end, 10); /* the time on a CPU; the time queued comes next */
    if (*end != ' ')
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(strtoull(end, NULL, 10));
}

/* sleep_after_signals(sleep, seconds): time.sleep(seconds), with no gap where a signal taken goes
 * unseen until the sleep ends. CPython's own sleep checks for signals, then enters its system call:
 * a SIGTERM landing between the two waited for the end of a time.sleep(30). Untraced that gap is
 * short; traced, a signal sent as the program says it is about to sleep lands while the sleep's
 * wrapper runs: 8 of 360 such processes beside a program thread asking for the GIL, 3 of 1,350
 * under a CPU quota's stalls (tests/agent/test_survival.py).
 * Here the signals are blocked from the last check on, and ppoll unblocks them as it sleeps, in one
 * step: one taken meanwhile ends the poll at once, and its handler runs as CPython's sleep runs it
 * on EINTR (then the sleep goes on to its deadline, PEP 475). The kernel lets a poll end late by a
 * thousandth of its timeout (a two-hundredth for a niced thread, 100 ms at most), clock_nanosleep
 * only by the timer slack (50 us): so each poll asks for a hundredth less than is left, ending
 * before the deadline, down to a last one of at most SLEEP_CHUNK_NS (late by the slack only).
 * A signal the kernel gave another thread while this one held them blocked (between its last check
 * and the poll, where dropping the GIL may let other threads run for milliseconds) ends no poll: the
 * signals are checked again every SIGNAL_CHECK_NS, so such a one waits that long at most, not for the
 * sleep's end (a SIGTERM sent as a program thread slept: the main thread slept its 30 s through,
 * 1 run in CI); only in the thread that runs the handlers (signal_thread). `sleep` itself (after
 * the check) for what is not a positive int or float under SLEEP_MAX_S (zero, its errors), and
 * where there is no ppoll. */
#define SLEEP_CHUNK_NS 50000000LL
#define SIGNAL_CHECK_NS 100000000LL
/* The thread that runs the signal handlers: the one that imported this module (the agent starts in
 * the main thread). Other threads' sleeps check for none (a stale id after a fork in another thread:
 * the child's sleeps check for none either, as before the checks). */
static unsigned long signal_thread;
#define SLEEP_MAX_S 1e7

static PyObject *
sleep_after_signals(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    double seconds = -1;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "sleep_after_signals() takes 2 arguments (%zd given)", nargs);
    if (PyFloat_CheckExact(args[1]))
        seconds = PyFloat_AS_DOUBLE(args[1]);
    else if (PyLong_CheckExact(args[1]) && (seconds = PyLong_AsDouble(args[1])) == -1.0 && PyErr_Occurred())
        PyErr_Clear(); /* too big for a double: the original says so */
    if (PyErr_CheckSignals() < 0)
        return NULL;
#ifdef __linux__
    if (seconds > 0 && seconds < SLEEP_MAX_S) {
        sigset_t asynchronous, program;
        struct timespec now, chunk;
        long long deadline, left, check, now_ns;
        int interrupted, error = 0;
#if PY_VERSION_HEX >= 0x030D0000
        if (PySys_Audit("time.sleep", "O", args[1]) < 0)
            return NULL;
#endif
        sigfillset(&asynchronous); /* a fault's signal is never held back */
        sigdelset(&asynchronous, SIGSEGV); sigdelset(&asynchronous, SIGBUS); sigdelset(&asynchronous, SIGFPE);
        sigdelset(&asynchronous, SIGILL); sigdelset(&asynchronous, SIGTRAP); sigdelset(&asynchronous, SIGSYS);
        sigdelset(&asynchronous, SIGABRT);
        clock_gettime(CLOCK_MONOTONIC, &now);
        deadline = now.tv_sec * 1000000000LL + now.tv_nsec + (long long)ceil(seconds * 1e9);
        for (;;) {
            pthread_sigmask(SIG_BLOCK, &asynchronous, &program);
            if (PyErr_CheckSignals() < 0) { /* one taken between the check above and the block */
                pthread_sigmask(SIG_SETMASK, &program, NULL);
                return NULL;
            }
            interrupted = 0;
            Py_BEGIN_ALLOW_THREADS
            clock_gettime(CLOCK_MONOTONIC, &now);
            check = PyThread_get_thread_ident() == signal_thread  /* else past any poll: never */
                ? now.tv_sec * 1000000000LL + now.tv_nsec + SIGNAL_CHECK_NS : deadline + SLEEP_CHUNK_NS + 1;
            for (;;) {
                clock_gettime(CLOCK_MONOTONIC, &now);
                now_ns = now.tv_sec * 1000000000LL + now.tv_nsec;
                left = deadline - now_ns;
                if (left <= 0)
                    break;
                if (check <= now_ns) {
                    interrupted = 1; /* by no signal of its own: the signals checked below, then on */
                    break;
                }
                if (left > check - now_ns + SLEEP_CHUNK_NS)
                    left = check - now_ns; /* late by the slack: only the next check is */
                else if (left > SLEEP_CHUNK_NS)
                    left = left - left / 100 > SLEEP_CHUNK_NS ? left - left / 100 : SLEEP_CHUNK_NS;
                chunk.tv_sec = left / 1000000000LL;
                chunk.tv_nsec = left % 1000000000LL;
                if (ppoll(NULL, 0, &chunk, &program) < 0) {
                    interrupted = errno == EINTR;
                    error = interrupted ? 0 : errno;
                    break;
                }
            }
            Py_END_ALLOW_THREADS
            pthread_sigmask(SIG_SETMASK, &program, NULL); /* what came since the poll's end is taken here */
            if (error) {
                errno = error;
                return PyErr_SetFromErrno(PyExc_OSError);
            }
            if (!interrupted)
                Py_RETURN_NONE;
            if (PyErr_CheckSignals() < 0)
                return NULL;
        }
    }
#endif
    return PyObject_CallOneArg(args[0], args[1]);
}

/* sleeper(sleep, record, before_block, threshold_ns, tracer_globals) -> time.sleep's wrapper (process.py),
 * in C: while the program sleeps, no frame of the agent's is on its stack, so a signal handler's
 * `frame`, a stack dumped from it (pytest-timeout's, `traceback.print_stack(frame)`) or by
 * faulthandler, shows the program's line as untraced (the Python wrapper's frame was on top). The
 * same steps as that wrapper: the call's start on the wall clock; the flusher thread's start
 * (`before_block(seconds)`) if it is not running, after which the sleep itself begins (`asleep`);
 * the sleep (sleep_after_signals); and `record(t0, t1, seconds, asleep)` for a sleep that took
 * threshold_ns or more, with the sleep's exception (if any) kept across it. An exception of
 * `before_block` or `record` (both fail open: a signal handler's, raised in their Python code) is
 * raised in place of the sleep's outcome, as in the Python wrapper. */
static PyObject *
timed_sleep(PyObject *state, PyObject *seconds)
{
    PyObject *args[4], *result, *called, *type, *value, *traceback, *started;
    PyObject *tracer_dict = PyTuple_GET_ITEM(state, 4);
    long long t0, t1, asleep;
    t0 = asleep = clock_ns(CLOCK_REALTIME);
    started = PyDict_GetItemWithError(tracer_dict, s_flusher_started);
    if (started != Py_True) {
        PyErr_Clear();
        /* its exception is a signal handler's (the program's, run in its Python code as the signal
         * came, with the signals it blocked meanwhile): raised here as CPython's sleep raises it */
        if ((called = PyObject_CallOneArg(PyTuple_GET_ITEM(state, 2), seconds)) == NULL)
            return NULL;
        Py_DECREF(called);
        if (PyDict_GetItemWithError(tracer_dict, s_flusher_started) == Py_True) /* it started the thread */
            asleep = clock_ns(CLOCK_REALTIME);
        PyErr_Clear();
    }
    args[0] = PyTuple_GET_ITEM(state, 0);
    args[1] = seconds;
    result = sleep_after_signals(NULL, args, 2);
    t1 = clock_ns(CLOCK_REALTIME);
    if (t1 - t0 < PyLong_AsLongLong(PyTuple_GET_ITEM(state, 3)))
        return result;
    PyErr_Fetch(&type, &value, &traceback);
    args[0] = PyLong_FromLongLong(t0);
    args[1] = PyLong_FromLongLong(t1);
    args[2] = seconds;
    args[3] = PyLong_FromLongLong(asleep);
    called = args[0] && args[1] && args[3] ? PyObject_Vectorcall(PyTuple_GET_ITEM(state, 1), args, 4, NULL) : NULL;
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
    Py_XDECREF(args[3]);
    if (called == NULL) { /* its exception goes on in place of the sleep's outcome */
        Py_XDECREF(result);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return NULL;
    }
    Py_DECREF(called);
    PyErr_Restore(type, value, traceback);
    return result;
}

static PyMethodDef timed_sleep_def = {"sleep", (PyCFunction)timed_sleep, METH_O, NULL};

static PyObject *
sleeper(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *state, *sleep;
    if (nargs != 5 || !PyLong_Check(args[3]) || !PyDict_Check(args[4]))
        return PyErr_Format(PyExc_TypeError, "sleeper(sleep, record, before_block, threshold_ns, tracer_globals)");
    if ((state = PyTuple_New(5)) == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < 5; i++)
        PyTuple_SET_ITEM(state, i, Py_NewRef(args[i]));
    sleep = PyCFunction_New(&timed_sleep_def, state);
    Py_DECREF(state);
    return sleep;
}

/* handle_with_traceback(exc, tb): `exc`, the exception being handled, re-raised by a bare `raise`
 * with traceback `tb` (tracer.strip_own_frames, Python < 3.11). Before 3.11 a bare `raise` re-raises
 * the handled exception's traceback as caught (sys.exc_info()[2], the wrapper's frame at its head:
 * setting __traceback__ changes nothing there), and adds no frame of the raising one. Nothing when
 * `exc` is not the exception being handled. */
static PyObject *
handle_with_traceback(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *type, *value, *traceback;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "handle_with_traceback() takes 2 arguments (%zd given)", nargs);
    PyErr_GetExcInfo(&type, &value, &traceback);
    if (value != args[0]) {
        PyErr_SetExcInfo(type, value, traceback);
        Py_RETURN_NONE;
    }
    Py_XDECREF(traceback);
    PyErr_SetExcInfo(type, value, args[1] == Py_None ? NULL : Py_NewRef(args[1])); /* steals all three */
    Py_RETURN_NONE;
}

/* A span's id (`attribute` span_id) or trace id: an import's frame's slot, its span id taken from
 * tracer._id_text when still "" (as tracer.ImportFrame.span_id takes it), its trace id through the
 * property when still "" (its parent's, once per level); a Span's attribute. */
static PyObject *
span_id_of(PyObject *span, PyObject *attribute)
{
    PyObject *id, *ids;
    if (Py_TYPE(span) != frame_type)
        return PyObject_GetAttr(span, attribute);
    id = SLOT(span, attribute == s_span_id ? span_id_at : trace_id_at);
    if (PyUnicode_Check(id) && PyUnicode_GET_LENGTH(id) > 0)
        return Py_NewRef(id);
    if (attribute != s_span_id)
        return PyObject_GetAttr(span, attribute);
    if ((ids = PyDict_GetItemWithError(tracer_globals, s_id_text)) == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "no _id_text to read");
        return NULL;
    }
    if ((id = PyIter_Next(ids)) == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "tracer._id_text ran out");
        return NULL;
    }
    set_slot(span, span_id_at, Py_NewRef(id));
    return id;
}

/* The pieces of a record, copied to `at`: text (its UTF-8; ASCII as it is stored) and a decimal. */
static char *
put_text(char *at, PyObject *text)
{
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 == NULL)
        return NULL;
    memcpy(at, utf8, size);
    return at + size;
}

static char *
put_chars(char *at, const char *chars)
{
    size_t size = strlen(chars);
    memcpy(at, chars, size);
    return at + size;
}

/* Two decimal digits at a time: the flush writes two 19-digit times a record. */
static const char two_digits[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

static char *
put_long(char *at, long value)
{
    char digits[24], *first = digits + sizeof digits;
    unsigned long rest = value < 0 ? -(unsigned long)value : (unsigned long)value;
    for (; rest >= 100; rest /= 100) {
        first -= 2;
        memcpy(first, two_digits + 2 * (rest % 100), 2);
    }
    if (rest >= 10) {
        first -= 2;
        memcpy(first, two_digits + 2 * rest, 2);
    } else {
        *--first = (char)('0' + rest);
    }
    if (value < 0)
        *--first = '-';
    memcpy(at, first, digits + sizeof digits - first);
    return at + (digits + sizeof digits - first);
}

/* import_line(frame, name, end, extra) -> tracer.import_line's record, formatted here (the flush calls
 * it for each recorded import: 1.3 us a record in Python, 0.97 us with PyUnicode_FromFormat, in a
 * loop); tracer.python_import_line for a name it writes escaped or a record too long for the line
 * buffer. */
static PyObject *
import_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *frame, *name, *parent, *span_id = NULL, *parent_id = NULL, *trace_id = NULL, *line = NULL;
    Py_ssize_t at, length;
    int kind;
    const void *data;
    long start, end, cumulative, child_ns;
    char text[4096], *put; /* the longest: ~220 bytes, two names and an extra of 256 characters (1 KiB each in UTF-8) */
    if (nargs != 4 || Py_TYPE(args[0]) != frame_type || !PyUnicode_Check(args[1]) || !PyUnicode_Check(args[3]))
        goto reference;
    frame = args[0];
    name = args[1];
    length = PyUnicode_GET_LENGTH(name);
    kind = PyUnicode_KIND(name);
    data = PyUnicode_DATA(name);
    if (length > 256 || PyUnicode_GET_LENGTH(args[3]) > 256) /* (4 bytes a character at most: the line fits in `text`) */
        goto reference;
    for (at = 0; at < length; at++) { /* name.isprintable() and '"' not in name and "\\" not in name */
        Py_UCS4 c = PyUnicode_READ(kind, data, at);
        if (c == '"' || c == '\\' || !Py_UNICODE_ISPRINTABLE(c))
            goto reference;
    }
    end = PyLong_AsLong(args[2]);
    start = PyLong_AsLong(SLOT(frame, start_ns_at));
    child_ns = PyLong_AsLong(SLOT(frame, child_ns_at));
    if (PyErr_Occurred())
        return NULL;
    cumulative = end - start;
    parent = SLOT(frame, parent_at);
    if ((span_id = span_id_of(frame, s_span_id)) != NULL && (parent_id = span_id_of(parent, s_span_id)) != NULL &&
        (trace_id = span_id_of(parent, s_trace_id)) != NULL) {
        /* X\t{span}\t{parent}\t{trace}\timport {name}\tINTERNAL\timport\t{start}\t{end}\t{status}\t{{...}}\t.\n */
        if (!PyUnicode_Check(span_id) || !PyUnicode_Check(parent_id) || !PyUnicode_Check(trace_id) ||
            !PyUnicode_Check(SLOT(frame, status_at)) || PyUnicode_GET_LENGTH(span_id) > 32 || PyUnicode_GET_LENGTH(parent_id) > 32 ||
            PyUnicode_GET_LENGTH(trace_id) > 32 || PyUnicode_GET_LENGTH(SLOT(frame, status_at)) > 16)
            line = PyObject_Vectorcall(py_import_line, args, nargs, NULL);
        else if ((put = put_chars(text, "X\t")) && (put = put_text(put, span_id)) && (put = put_chars(put, "\t")) &&
                 (put = put_text(put, parent_id)) && (put = put_chars(put, "\t")) && (put = put_text(put, trace_id)) &&
                 (put = put_chars(put, "\timport ")) && (put = put_text(put, name)) && (put = put_chars(put, "\tINTERNAL\timport\t")) &&
                 (put = put_long(put, start)) && (put = put_chars(put, "\t")) && (put = put_long(put, end)) &&
                 (put = put_chars(put, "\t")) && (put = put_text(put, SLOT(frame, status_at))) &&
                 (put = put_chars(put, "\t{\"python.import.module\":\"")) && (put = put_text(put, name)) &&
                 (put = put_chars(put, "\",\"python.import.cumulative_ns\":")) && (put = put_long(put, cumulative)) &&
                 (put = put_chars(put, ",\"python.import.self_ns\":")) && (put = put_long(put, cumulative - child_ns)) &&
                 (put = put_text(put, args[3])) && (put = put_chars(put, "}\t.\n")))
            line = PyUnicode_DecodeUTF8(text, put - text, NULL);
    }
    Py_XDECREF(span_id);
    Py_XDECREF(parent_id);
    Py_XDECREF(trace_id);
    return line;
reference: /* what only the Python formatter writes */
    return PyObject_Vectorcall(py_import_line, args, nargs, NULL);
}

/* The span file's attribute objects and X records (spanfile.encode, tracer._format), written here for
 * what nearly every span holds, and by those Python references for the rest: a key or text value that
 * is not printable ASCII without '"' and '\\', a value that is not a str, int, bool, float or None, a
 * record longer than the line buffer. In Python, encoding a request span's ten attributes was a
 * quarter of the bytecode an HTTP request adds (docs/benchmarks.md, "HTTP"). */
static PyTypeObject *record_span_type; /* tracer.Span */
static PyObject *py_encode, *py_format, *unset_status; /* spanfile.encode, tracer._format, tracer.UNSET */
/* Span's slots, in Span.__init__'s order: their offsets (span_writers) */
enum { S_SPAN_ID, S_PARENT, S_PARENT_ID, S_TRACE_ID, S_NAME, S_KIND, S_CATEGORY, S_START_NS, S_ATTRIBUTES, S_END_NS,
       S_DEFERRED, S_KEEP, S_SUMS, S_CHILD_NS, S_STATUS, S_END_ATTRIBUTES, S_WRITTEN, SPAN_SLOTS };
static const char *const span_slots[SPAN_SLOTS] = {"span_id", "parent", "parent_id", "trace_id", "name", "kind", "category",
                                                   "start_ns", "attributes", "end_ns", "deferred", "keep", "sums",
                                                   "child_ns", "status", "end_attributes", "written"};
static Py_ssize_t span_at[SPAN_SLOTS];

typedef struct {
    char *at, *end; /* at: NULL once the text no longer fits */
} Line;

static void
line_put(Line *line, const char *bytes, Py_ssize_t size)
{
    if (line->at == NULL)
        return;
    if (line->end - line->at < size) {
        line->at = NULL;
        return;
    }
    memcpy(line->at, bytes, size);
    line->at += size;
}

/* Printable ASCII but '"' and '\\': what JSON takes between quotes as it is (filled at the module's load). */
static unsigned char plain_char[128];

/* str.isprintable() and no '"' or '\\', for ASCII text. */
static int
plain_ascii(PyObject *text)
{
    const Py_UCS1 *at, *end;
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text))
        return 0;
    at = PyUnicode_1BYTE_DATA(text);
    for (end = at + PyUnicode_GET_LENGTH(text); at < end; at++)
        if (!plain_char[*at])
            return 0;
    return 1;
}

/* Keys found plain, by their address: attribute names are a few constant strings, checked once each.
 * Strong references, so an address seen is the very (immutable) string checked. */
static PyObject *plain_keys[256];

static int
plain_key(PyObject *key)
{
    PyObject **slot = &plain_keys[((uintptr_t)key >> 4) & 255], *old;
    if (*slot == key)
        return 1;
    if (!plain_ascii(key))
        return 0;
    old = *slot;
    *slot = Py_NewRef(key);
    Py_XDECREF(old);
    return 1;
}

static void
line_ascii(Line *line, PyObject *text) /* a str plain_ascii accepted */
{
    line_put(line, (const char *)PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text));
}

static void
line_long(Line *line, long long value)
{
    char digits[24];
    line_put(line, digits, put_long(digits, (long)value) - digits);
}

/* `"key":value` as spanfile.encode writes it: 1, or 0 for the reference to write, -1 on an error. */
static int
line_pair(Line *line, PyObject *key, PyObject *value, int first) /* `key`: plain_key's */
{
    line_put(line, first ? "\"" : ",\"", first ? 1 : 2);
    line_ascii(line, key);
    line_put(line, "\":", 2);
    if (PyUnicode_CheckExact(value)) {
        if (!plain_ascii(value))
            return 0;
        line_put(line, "\"", 1);
        line_ascii(line, value);
        line_put(line, "\"", 1);
    } else if (PyBool_Check(value)) {
        line_put(line, value == Py_True ? "true" : "false", value == Py_True ? 4 : 5);
    } else if (PyLong_CheckExact(value)) {
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow)
            return 0;
        if (number == -1 && PyErr_Occurred())
            return -1;
        line_long(line, number);
    } else if (value == Py_None) {
        line_put(line, "null", 4);
    } else if (PyFloat_CheckExact(value)) {
        double number = PyFloat_AS_DOUBLE(value);
        char *text;
        if (!isfinite(number)) { /* JSON has no NaN or infinity */
            line_put(line, "null", 4);
            return 1;
        }
        if ((text = PyOS_double_to_string(number, 'r', 0, Py_DTSF_ADD_DOT_0, NULL)) == NULL) /* repr() */
            return -1;
        line_put(line, text, strlen(text));
        PyMem_Free(text);
    } else {
        return 0;
    }
    return 1;
}

/* The JSON object of {**first, **second} (each an exact dict, or NULL): 1, 0 for the reference, -1 on
 * an error. Keys are checked before any lookup: a lookup of an exact str runs no Python code. */
static int
line_attributes(Line *line, PyObject *first, PyObject *second)
{
    PyObject *key, *value;
    Py_ssize_t at = 0;
    int none_yet = 1, done;
    line_put(line, "{", 1);
    while (first != NULL && PyDict_Next(first, &at, &key, &value)) {
        if (!plain_key(key))
            return 0;
        if (second != NULL) { /* the later dict's value in the earlier key's place */
            PyObject *later = PyDict_GetItemWithError(second, key);
            if (later != NULL)
                value = later;
            else if (PyErr_Occurred())
                return -1;
        }
        if ((done = line_pair(line, key, value, none_yet)) <= 0)
            return done;
        none_yet = 0;
    }
    at = 0;
    while (second != NULL && PyDict_Next(second, &at, &key, &value)) {
        if (!plain_key(key))
            return 0;
        if (first != NULL && (done = PyDict_Contains(first, key)) != 0) {
            if (done < 0)
                return -1;
            continue;
        }
        if ((done = line_pair(line, key, value, none_yet)) <= 0)
            return done;
        none_yet = 0;
    }
    line_put(line, "}", 1);
    return line->at != NULL;
}

/* encode(attributes) -> spanfile.encode(attributes) */
static PyObject *
encode(PyObject *module, PyObject *attributes)
{
    char text[2048];
    Line line = {text, text + sizeof text};
    PyObject *result;
    int done;
    if (attributes == Py_None || (PyDict_CheckExact(attributes) && PyDict_GET_SIZE(attributes) == 0))
        return PyUnicode_FromStringAndSize("{}", 2);
    if (!PyDict_CheckExact(attributes))
        return PyObject_CallOneArg(py_encode, attributes);
    if ((done = line_attributes(&line, attributes, NULL)) < 0)
        return NULL;
    if (done == 0)
        return PyObject_CallOneArg(py_encode, attributes);
    if ((result = PyUnicode_New(line.at - text, 127)) != NULL) /* ASCII: plain_ascii's */
        memcpy(PyUnicode_1BYTE_DATA(result), text, line.at - text);
    return result;
}

static int
line_text(Line *line, PyObject *text, int *ascii) /* any str, in UTF-8: 0 for one that has none (a lone surrogate) */
{
    Py_ssize_t size;
    const char *utf8;
    if (!PyUnicode_CheckExact(text))
        return 0;
    if (PyUnicode_IS_ASCII(text)) {
        line_put(line, (const char *)PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text));
        return 1;
    }
    *ascii = 0;
    if ((utf8 = PyUnicode_AsUTF8AndSize(text, &size)) == NULL) {
        PyErr_Clear(); /* the reference writes it as Python does */
        return 0;
    }
    line_put(line, utf8, size);
    return 1;
}

static PyObject *
dict_or_null(PyObject *value) /* a truthy exact dict, NULL for None or empty; `value` itself else */
{
    if (value == Py_None || (PyDict_CheckExact(value) && PyDict_GET_SIZE(value) == 0))
        return NULL;
    return value;
}

/* span_line(span) -> tracer._format(span): the X record of an ended span, else the reference's S. */
static PyObject *
span_line(PyObject *module, PyObject *span)
{
    char text[8192];
    Line line = {text, text + sizeof text};
    PyObject *end_ns, *start_ns, *attributes, *end_attributes, **field, *result;
    Py_ssize_t texts[] = {span_at[S_SPAN_ID], span_at[S_PARENT_ID], span_at[S_TRACE_ID], span_at[S_NAME], span_at[S_KIND],
                          span_at[S_CATEGORY]};
    int overflow, done, ascii = 1; /* every text field ASCII (the attributes are): no UTF-8 to decode */
    long long start, end;
    size_t i;
    if (Py_TYPE(span) != record_span_type || (end_ns = SLOT(span, span_at[S_END_NS])) == NULL || !PyLong_CheckExact(end_ns) ||
        (start_ns = SLOT(span, span_at[S_START_NS])) == NULL || !PyLong_CheckExact(start_ns) ||
        (attributes = SLOT(span, span_at[S_ATTRIBUTES])) == NULL || (end_attributes = SLOT(span, span_at[S_END_ATTRIBUTES])) == NULL ||
        SLOT(span, span_at[S_STATUS]) == NULL)
        goto reference;
    end = PyLong_AsLongLongAndOverflow(end_ns, &overflow);
    if (overflow || end == 0)
        goto reference;
    start = PyLong_AsLongLongAndOverflow(start_ns, &overflow);
    if (overflow)
        goto reference;
    line_put(&line, "X", 1);
    for (i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        field = &SLOT(span, texts[i]);
        line_put(&line, "\t", 1);
        if (*field == NULL || !line_text(&line, *field, &ascii))
            goto reference;
    }
    line_put(&line, "\t", 1);
    line_long(&line, start);
    line_put(&line, "\t", 1);
    line_long(&line, end);
    line_put(&line, "\t", 1);
    if (!line_text(&line, SLOT(span, span_at[S_STATUS]), &ascii))
        goto reference;
    line_put(&line, "\t", 1);
    /* X records merge the end's attributes into the start's (tracer._format) */
    attributes = dict_or_null(attributes);
    end_attributes = dict_or_null(end_attributes);
    if ((attributes != NULL && !PyDict_CheckExact(attributes)) || (end_attributes != NULL && !PyDict_CheckExact(end_attributes)))
        goto reference;
    if ((done = line_attributes(&line, attributes, end_attributes)) < 0)
        return NULL;
    if (done == 0)
        goto reference;
    line_put(&line, "\t.\n", 3);
    if (line.at == NULL)
        goto reference;
    if (!ascii)
        return PyUnicode_DecodeUTF8(text, line.at - text, NULL);
    if ((result = PyUnicode_New(line.at - text, 127)) != NULL)
        memcpy(PyUnicode_1BYTE_DATA(result), text, line.at - text);
    return result;
reference:
    return PyObject_CallOneArg(py_format, span);
}

static PyMethodDef encode_def = {"encode", encode, METH_O, "encode(attributes) -> spanfile.encode(attributes)"};
static PyMethodDef span_line_def = {"span_line", span_line, METH_O, "span_line(span) -> tracer._format(span)"};

/* new_span(span_id, parent, parent_id, trace_id, name, kind, category, start_ns, attributes): a Span with
 * every slot set as Span.__init__ sets it, without its frame (start_span's seventeen slot stores in
 * Python were a third of its bytecode). */
static PyObject *
new_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *span, *defaults[SPAN_SLOTS - S_END_NS];
    Py_ssize_t i;
    if (nargs != S_END_NS)
        return PyErr_Format(PyExc_TypeError, "new_span takes %d arguments, not %zd", S_END_NS, nargs);
    if ((span = record_span_type->tp_alloc(record_span_type, 0)) == NULL)
        return NULL;
    defaults[S_END_NS - S_END_NS] = zero;
    defaults[S_DEFERRED - S_END_NS] = Py_False;
    defaults[S_KEEP - S_END_NS] = Py_False;
    defaults[S_SUMS - S_END_NS] = Py_None;
    defaults[S_CHILD_NS - S_END_NS] = zero;
    defaults[S_STATUS - S_END_NS] = unset_status;
    defaults[S_END_ATTRIBUTES - S_END_NS] = Py_None;
    defaults[S_WRITTEN - S_END_NS] = Py_False;
    for (i = 0; i < SPAN_SLOTS; i++) /* a new object's slots are NULL */
        SLOT(span, span_at[i]) = Py_NewRef(i < S_END_NS ? args[i] : defaults[i - S_END_NS]);
    return span;
}

static PyMethodDef new_span_def = {"new_span", (PyCFunction)(void (*)(void))new_span, METH_FASTCALL,
                                   "new_span(span_id, parent, parent_id, trace_id, name, kind, category, start_ns, attributes) -> Span"};

/* span_writers(Span, format, encode, UNSET) -> (new_span, span_line, encode), for tracer.py: a new Span,
 * the writers of a span's record and of an attribute object, `format` (tracer._format) and `encode`
 * (spanfile's) writing what they leave. Once a process. */
static PyObject *
span_writers(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyMethodDef *defs[] = {&new_span_def, &span_line_def, &encode_def};
    PyObject *made[3] = {NULL, NULL, NULL}, *result = NULL;
    Py_ssize_t i;
    if (nargs != 4 || !PyType_Check(args[0]) || !PyUnicode_Check(args[3]))
        return PyErr_Format(PyExc_TypeError, "span_writers(Span, format, encode, UNSET)");
    if (record_span_type != NULL)
        return PyErr_Format(PyExc_RuntimeError, "span writers made already");
    for (i = 0; i < SPAN_SLOTS; i++)
        if ((span_at[i] = slot_offset((PyTypeObject *)args[0], span_slots[i])) < 0)
            return NULL;
    for (i = 0; i < 3; i++)
        if ((made[i] = PyCFunction_NewEx(defs[i], module, NULL)) == NULL)
            goto done;
    if ((result = PyTuple_Pack(3, made[0], made[1], made[2])) != NULL) {
        record_span_type = (PyTypeObject *)Py_NewRef(args[0]);
        py_format = Py_NewRef(args[1]);
        py_encode = Py_NewRef(args[2]);
        unset_status = Py_NewRef(args[3]);
    }
done:
    for (i = 0; i < 3; i++)
        Py_XDECREF(made[i]);
    return result;
}

/* Whether the header line `text` starts with `name` (lower case) and a colon, ASCII case aside. */
static int
header_is(const char *text, Py_ssize_t size, const char *name, Py_ssize_t length)
{
    Py_ssize_t i;
    if (size <= length || text[length] != ':')
        return 0;
    for (i = 0; i < length; i++)
        if (Py_TOLOWER((unsigned char)text[i]) != name[i])
            return 0;
    return 1;
}

/* `line.partition(b":")[0].strip().lower() == b"traceparent"` */
static int
named_traceparent(const char *text, Py_ssize_t size)
{
    const char *end = memchr(text, ':', size);
    if (end == NULL)
        end = text + size;
    while (text < end && Py_ISSPACE(*text))
        text++;
    while (end > text && Py_ISSPACE(end[-1]))
        end--;
    return end - text == 11 && PyOS_strnicmp(text, "traceparent", 11) == 0;
}

/* put_traceparent(lines, header) -> hooks/http_client._put_traceparent(lines, header), its reference:
 * http.client's buffered header lines with any traceparent replaced by `header` (appended), and the
 * Content-Length's value (bytes), or None. Each line's name is compared in place: no lower-cased copy
 * of them all. Lines that are not all bytes go to the reference. */
static PyObject *py_put_traceparent;

static PyObject *
put_traceparent(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *lines, *line, *length = NULL, *kept;
    Py_ssize_t i, size;
    const char *text, *newline;
    int found = 0;
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyBytes_Check(args[1]))
        return PyErr_Format(PyExc_TypeError, "put_traceparent(lines: list, header: bytes)");
    lines = args[0];
    for (i = 0; i < PyList_GET_SIZE(lines); i++)
        if (!PyBytes_CheckExact(PyList_GET_ITEM(lines, i)))
            return PyObject_Vectorcall(py_put_traceparent, args, nargs, NULL);
    for (i = 1; i < PyList_GET_SIZE(lines); i++) { /* line 0 is the request line */
        line = PyList_GET_ITEM(lines, i);
        text = PyBytes_AS_STRING(line);
        size = PyBytes_GET_SIZE(line);
        found = found || header_is(text, size, "traceparent", 11);
        if (length == NULL && header_is(text, size, "content-length", 14)) {
            newline = memchr(text + 15, '\n', size - 15);
            if ((length = PyBytes_FromStringAndSize(text + 15, (newline != NULL ? newline : text + size) - (text + 15))) == NULL)
                return NULL;
        }
    }
    if (found) { /* lines[1:] = the lines not named traceparent */
        if ((kept = PyList_New(0)) == NULL)
            goto failed;
        for (i = 1; i < PyList_GET_SIZE(lines); i++) {
            line = PyList_GET_ITEM(lines, i);
            if (!named_traceparent(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line)) && PyList_Append(kept, line) < 0) {
                Py_DECREF(kept);
                goto failed;
            }
        }
        i = PyList_SetSlice(lines, 1, PyList_GET_SIZE(lines), kept);
        Py_DECREF(kept);
        if (i < 0)
            goto failed;
    }
    if (PyList_Append(lines, args[1]) < 0)
        goto failed;
    return length != NULL ? length : Py_NewRef(Py_None);
failed:
    Py_XDECREF(length);
    return NULL;
}

static PyMethodDef put_traceparent_def = {"put_traceparent", (PyCFunction)(void (*)(void))put_traceparent, METH_FASTCALL,
                                          "put_traceparent(lines, header) -> the Content-Length's value, or None"};

/* header_putter(reference) -> put_traceparent, `reference` writing what it leaves (hooks/http_client.py) */
static PyObject *
header_putter(PyObject *module, PyObject *reference)
{
    if (!PyCallable_Check(reference))
        return PyErr_Format(PyExc_TypeError, "header_putter(reference): a function");
    Py_XSETREF(py_put_traceparent, Py_NewRef(reference));
    return PyCFunction_NewEx(&put_traceparent_def, module, NULL);
}

/* current_span() -> tracer.current with this store: the innermost import under way in this thread while
 * the ContextVar holds what it held when that import began, else the ContextVar's span. */
static PyObject *
current_span(PyObject *module, PyObject *unused)
{
    PyObject *span;
    if (PyContextVar_Get(current, NULL, &span) < 0)
        return NULL;
    if (innermost != NULL && SLOT(innermost, outer_at) == span) {
        Py_DECREF(span);
        return Py_NewRef(innermost);
    }
    return span;
}

/* pop_import(frame): importtime._pop with this store (importtime._end's, for what it ends itself). */
static PyObject *
pop_import(PyObject *module, PyObject *frame)
{
    if (Py_TYPE(frame) != frame_type)
        return PyErr_Format(PyExc_TypeError, "not an import's frame: %R", frame);
    pop(frame);
    Py_RETURN_NONE;
}

/* context_var(name) -> contextvars.ContextVar(name, default=None), made without importing _contextvars:
 * that module's load (a shared library mapped, ~0.54 M instructions) was a tenth of a trivial
 * process's start-up, which only a program that uses context variables needs. */
static PyObject *
context_var(PyObject *module, PyObject *name)
{
    const char *text = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (text == NULL)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "a ContextVar's name is a str, not %R", name);
    return PyContextVar_New(text, Py_None);
}

/* span_ids(start) -> an iterator of span ids from `start` up: "%016x" % n for n = start, start + 1, ...
 * (tracer._id_texts without itertools, whose load a trivial process would pay at start-up). Each
 * step runs holding the GIL: two threads never get the same id. */
typedef struct {
    PyObject_HEAD
    unsigned long long next;
} SpanIds;

static PyObject *
span_ids_next(SpanIds *self)
{
    static const char digits[] = "0123456789abcdef";
    unsigned long long n = self->next++;
    PyObject *id = PyUnicode_New(16, 127);
    Py_UCS1 *at;
    int i;
    if (id == NULL)
        return NULL;
    at = PyUnicode_1BYTE_DATA(id);
    for (i = 15; i >= 0; i--, n >>= 4)
        at[i] = (Py_UCS1)digits[n & 15];
    return id;
}

static PyTypeObject span_ids_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_importtime.SpanIds",
    .tp_basicsize = sizeof(SpanIds),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)span_ids_next,
};

static PyObject *
span_ids(PyObject *module, PyObject *start)
{
    unsigned long long first = PyLong_AsUnsignedLongLong(start);
    SpanIds *ids;
    if (first == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if ((ids = PyObject_New(SpanIds, &span_ids_type)) == NULL)
        return NULL;
    ids->next = first;
    return (PyObject *)ids;
}

/* The agent's reads that a program's audit hooks would otherwise see: sys._getframe, a function's
 * `__code__`, a frame's `f_code` and a traceback's `tb_frame` each raise an audit event, as do the
 * open and the exec of a lazy bundle's module (importtime.py), the agent's other opens (its span file,
 * /proc's files) and its changes to the environment a child inherits. These do the same work without one.
 * (Its unmarshal raises marshal.loads whichever way it is called, as a module's .pyc does.) */

/* frame_at(depth) -> sys._getframe(depth), without its audit event */
static PyObject *
frame_at(PyObject *module, PyObject *depth_object)
{
    long depth = PyLong_AsLong(depth_object);
    PyFrameObject *frame = PyEval_GetFrame();
    if (depth == -1 && PyErr_Occurred())
        return NULL;
#if PY_VERSION_HEX >= 0x03090000
    Py_XINCREF(frame);
    while (depth-- > 0 && frame != NULL) {
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    if (frame == NULL)
        return PyErr_Format(PyExc_ValueError, "call stack is not deep enough");
    return (PyObject *)frame;
#else
    while (depth-- > 0 && frame != NULL)
        frame = frame->f_back;
    if (frame == NULL)
        return PyErr_Format(PyExc_ValueError, "call stack is not deep enough");
    return Py_NewRef((PyObject *)frame);
#endif
}

/* code_of(obj) -> the code of a function, a method's function or a frame (`__code__`, `f_code`), else None */
static PyObject *
code_of(PyObject *module, PyObject *obj)
{
    if (PyMethod_Check(obj))
        obj = PyMethod_GET_FUNCTION(obj);
    if (PyFunction_Check(obj))
        return Py_NewRef(PyFunction_GET_CODE(obj));
    if (PyFrame_Check(obj)) {
#if PY_VERSION_HEX >= 0x03090000
        return (PyObject *)PyFrame_GetCode((PyFrameObject *)obj);
#else
        return Py_NewRef((PyObject *)((PyFrameObject *)obj)->f_code);
#endif
    }
    Py_RETURN_NONE;
}

/* frame_of(traceback) -> its `tb_frame` */
static PyObject *
frame_of(PyObject *module, PyObject *traceback)
{
    if (!PyTraceBack_Check(traceback))
        return PyErr_Format(PyExc_TypeError, "not a traceback: %R", traceback);
    return Py_NewRef((PyObject *)((PyTracebackObject *)traceback)->tb_frame);
}

/* read_file(path, offset, length) -> up to `length` bytes of the file from `offset` (os.open and os.pread) */
static PyObject *
read_file(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *path, *data;
    long long offset;
    Py_ssize_t length, done = 0;
    int fd, error = 0;
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "read_file(path, offset, length)");
    offset = PyLong_AsLongLong(args[1]);
    length = PyLong_AsSsize_t(args[2]);
    if ((offset == -1 || length == -1) && PyErr_Occurred())
        return NULL;
    if (offset < 0 || length < 0)
        return PyErr_Format(PyExc_ValueError, "read_file: a negative offset or length");
    if (!PyUnicode_FSConverter(args[0], &path))
        return NULL;
    if ((data = PyBytes_FromStringAndSize(NULL, length)) == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    fd = open(PyBytes_AS_STRING(path), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        error = errno;
    while (fd >= 0 && done < length) {
        ssize_t got = pread(fd, PyBytes_AS_STRING(data) + done, (size_t)(length - done), (off_t)(offset + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            error = errno;
        if (got <= 0)
            break;
        done += got;
    }
    if (fd >= 0)
        close(fd);
    Py_END_ALLOW_THREADS
    if (error) {
        errno = error;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, args[0]);
        Py_DECREF(path);
        Py_DECREF(data);
        return NULL;
    }
    Py_DECREF(path);
    if (done < length && _PyBytes_Resize(&data, done) < 0)
        return NULL;
    return data;
}

/* open_fd(path, flags, mode) -> os.open(path, flags, mode): a descriptor not inherited by children,
 * moved high, below the soft RLIMIT_NOFILE and OPEN_FD_HIGH (see tracer.open_fd), or where that is
 * taken, at least above 0-2 (stdin, stdout or stderr closed when the program started stay closed) */
#define OPEN_FD_HIGH 1024  /* tracer.OPEN_FD_HIGH */

static PyObject *
open_fd(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *path;
    long flags, mode;
    int fd, error = 0;
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "open_fd(path, flags, mode)");
    flags = PyLong_AsLong(args[1]);
    mode = PyLong_AsLong(args[2]);
    if ((flags == -1 || mode == -1) && PyErr_Occurred())
        return NULL;
    if (!PyUnicode_FSConverter(args[0], &path))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    do {
        fd = open(PyBytes_AS_STRING(path), (int)flags | O_CLOEXEC, (mode_t)mode);
    } while (fd < 0 && (error = errno) == EINTR);
    if (fd >= 0) {
        struct rlimit limit;
        int top = OPEN_FD_HIGH, high = -1;
        if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
                && limit.rlim_cur < (rlim_t)OPEN_FD_HIGH)
            top = (int)limit.rlim_cur;
        if (fd < top - 1)
            high = fcntl(fd, F_DUPFD_CLOEXEC, top - 1);  /* the lowest free from there: EMFILE if taken */
        if (high < 0 && fd < 3) {
            high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
            error = errno;
        }
        if (high >= 0 || fd < 3) {
            close(fd);
            fd = high;
        }
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (fd < 0) {
        errno = error;
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, args[0]);
    }
    return PyLong_FromLong(fd);
}

/* getenv(name) -> the process's environment's value of `name` (what a child inherits), or None */
static PyObject *
env_get(PyObject *module, PyObject *name)
{
    PyObject *encoded;
    const char *value;
    if (!PyUnicode_FSConverter(name, &encoded))
        return NULL;
    value = getenv(PyBytes_AS_STRING(encoded));
    Py_DECREF(encoded);
    if (value == NULL)
        Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(value);
}

/* setenv(name, value): the process's environment's `name` set to `value`, or removed for None (os.putenv,
 * os.unsetenv), leaving os.environ as the program has it */
static PyObject *
env_set(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *name, *value = NULL;
    int failed;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "setenv(name, value)");
    if (!PyUnicode_FSConverter(args[0], &name))
        return NULL;
    if (args[1] != Py_None && !PyUnicode_FSConverter(args[1], &value)) {
        Py_DECREF(name);
        return NULL;
    }
    failed = value == NULL ? unsetenv(PyBytes_AS_STRING(name)) : setenv(PyBytes_AS_STRING(name), PyBytes_AS_STRING(value), 1);
    Py_DECREF(name);
    Py_XDECREF(value);
    if (failed)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* exec_code(code, globals): exec(code, globals), without its audit event (a module's body, run as
 * importlib runs it: `__builtins__` put in its globals first) */
static PyObject *
exec_code(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *result;
    int has_builtins;
    if (nargs != 2 || !PyCode_Check(args[0]) || !PyDict_Check(args[1]))
        return PyErr_Format(PyExc_TypeError, "exec_code(code, globals): a code object and a dict");
    if ((has_builtins = PyDict_Contains(args[1], s_builtins)) < 0 ||
        (!has_builtins && PyDict_SetItem(args[1], s_builtins, PyEval_GetBuiltins()) < 0))
        return NULL;
    if ((result = PyEval_EvalCode(args[0], args[1], args[1])) == NULL)
        return NULL;
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* A child's CPU at its reap, in ns at the kernel's microseconds (hooks/os_.py): without CPython's
 * wait4 and getrusage, which import `resource` (an audit event the program's hooks would see, and a
 * module the program finds loaded or not as untraced only through os_.py's lending of it). */
static long long
cpu_ns(const struct rusage *usage)
{
    return ((usage->ru_utime.tv_sec + usage->ru_stime.tv_sec) * 1000000LL +
            usage->ru_utime.tv_usec + usage->ru_stime.tv_usec) * 1000LL;
}

/* wait_cpu(pid, options) -> (pid, status, the reaped child's CPU ns): os.waitpid(pid, options) (its
 * EINTR retries, signal handlers and errors) with the rusage asked for, as wait4 */
static PyObject *
wait_cpu(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    struct rusage usage;
    long pid, options;
    int status = 0, failed = 0;
    pid_t reaped;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "wait_cpu(pid, options)");
    pid = PyLong_AsLong(args[0]);
    options = PyLong_AsLong(args[1]);
    if ((pid == -1 || options == -1) && PyErr_Occurred())
        return NULL;
    memset(&usage, 0, sizeof usage);
    do {
        Py_BEGIN_ALLOW_THREADS
        reaped = wait4((pid_t)pid, &status, (int)options, &usage);
        Py_END_ALLOW_THREADS
    } while (reaped < 0 && errno == EINTR && !(failed = PyErr_CheckSignals()));
    if (reaped < 0)
        return failed ? NULL : PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("(iiL)", (int)reaped, status, cpu_ns(&usage));
}

/* children_cpu() -> RUSAGE_CHILDREN's user + system CPU in ns */
static PyObject *
children_cpu(PyObject *module, PyObject *unused)
{
    struct rusage usage;
    if (getrusage(RUSAGE_CHILDREN, &usage) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLongLong(cpu_ns(&usage));
}

/* The garbage collector's passes (process.py, _watch_gc): counted by generation, and each one at least
 * `threshold_ns` long kept with the span it interrupted, for spans at the next flush. The
 * callback is C and touches no Python object but the current span (a reference): CPython calls it
 * twice a collection (~150-1,000 a process), from inside any allocation, the agent's own included. */
#define GC_LONG_MAX 4096  /* between two flushes: a program that records nothing else flushes only at its end */
static long long gc_count[3], gc_total_ns[3], gc_started_ns, gc_threshold_ns;
static Py_ssize_t gc_dropped;
static int gc_long_n;
static struct gc_pass { long long start_ns, end_ns; long generation, collected; PyObject *parent; } gc_long[GC_LONG_MAX];

static PyObject *
gc_callback(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long long now = clock_ns(CLOCK_REALTIME);
    PyObject *value;
    long generation, collected = 0;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || PyUnicode_GET_LENGTH(args[0]) < 3 || !PyDict_Check(args[1]))
        Py_RETURN_NONE;  /* not CPython's call: nothing to count */
    if (PyUnicode_READ_CHAR(args[0], 2) == 'a') {  /* "start", not "stop" */
        gc_started_ns = now;
        Py_RETURN_NONE;
    }
    if ((value = PyDict_GetItem(args[1], s_generation)) == NULL || (generation = PyLong_AsLong(value)) < 0 ||
        generation > 2 || gc_started_ns == 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if ((value = PyDict_GetItem(args[1], s_collected)) != NULL && (collected = PyLong_AsLong(value)) < 0)
        PyErr_Clear();
    gc_count[generation]++;
    gc_total_ns[generation] += now - gc_started_ns;
    if (now - gc_started_ns >= gc_threshold_ns) {
        if (gc_long_n == GC_LONG_MAX) {
            gc_dropped++;
        } else {
            PyObject *parent = current != NULL ? current_span(module, NULL) : NULL;  /* (install set it) */
            if (parent == NULL || keep(parent) < 0)  /* written, whatever a longer import threshold says */
                PyErr_Clear();
            gc_long[gc_long_n].start_ns = gc_started_ns;
            gc_long[gc_long_n].end_ns = now;
            gc_long[gc_long_n].generation = generation;
            gc_long[gc_long_n].collected = collected;
            gc_long[gc_long_n++].parent = parent;  /* None, or the span the pass interrupted */
        }
    }
    gc_started_ns = 0;
    Py_RETURN_NONE;
}

static PyMethodDef gc_callback_def = {"selfopt_trace_gc", (PyCFunction)(void (*)(void))gc_callback, METH_FASTCALL,
                                      "the garbage collector's passes, timed for selfopt-trace"};

/* gc_watcher(threshold_ns) -> the callback for gc.callbacks; the counts start from nothing (a forked child's too) */
static PyObject *
gc_watcher(PyObject *module, PyObject *threshold)
{
    long long value = PyLong_AsLongLong(threshold);
    if (value == -1 && PyErr_Occurred())
        return NULL;
    for (int i = 0; i < gc_long_n; i++)
        Py_CLEAR(gc_long[i].parent);
    memset(gc_count, 0, sizeof gc_count);
    memset(gc_total_ns, 0, sizeof gc_total_ns);
    gc_long_n = 0;
    gc_dropped = 0;
    gc_started_ns = 0;
    gc_threshold_ns = value;
    return PyCFunction_NewEx(&gc_callback_def, module, NULL);
}

/* gc_passes() -> (passes by generation, their ns by generation, the long ones as (start_ns, end_ns,
 * generation, collected, span or None) since the last call, how many long ones were not kept).
 * The long ones are taken out before the result is built: building it allocates, and a pass that
 * sets off is kept for the next call (it was written past the list's end once a flush called this). */
static PyObject *
gc_passes(PyObject *module, PyObject *unused)
{
    int n = gc_long_n;
    Py_ssize_t dropped = gc_dropped;
    struct gc_pass *taken = n ? PyMem_Malloc(n * sizeof *taken) : NULL;
    PyObject *long_ones, *result = NULL;
    if (n && taken == NULL)
        return PyErr_NoMemory();
    if (n)
        memcpy(taken, gc_long, n * sizeof *taken);
    gc_long_n = 0;
    gc_dropped = 0;
    if ((long_ones = PyList_New(n)) != NULL) {
        int i = 0;
        for (; i < n; i++) {
            PyObject *item = Py_BuildValue("(LLllO)", taken[i].start_ns, taken[i].end_ns, taken[i].generation,
                                           taken[i].collected, taken[i].parent ? taken[i].parent : Py_None);
            if (item == NULL)
                break;
            PyList_SET_ITEM(long_ones, i, item);
        }
        if (i == n)
            result = Py_BuildValue("((LLL)(LLL)On)", gc_count[0], gc_count[1], gc_count[2], gc_total_ns[0],
                                   gc_total_ns[1], gc_total_ns[2], long_ones, dropped);
        Py_DECREF(long_ones);
    }
    for (int i = 0; i < n; i++)
        Py_XDECREF(taken[i].parent);
    PyMem_Free(taken);
    if (result == NULL)  /* (no memory) those taken are lost: said as not kept */
        gc_dropped += dropped + n;
    return result;
}

/* The interpreter's finalization, after the agent's last record (process.py, _await_finalization): it
 * ends the `interpreter.finalize` span whose X record Python prepared (`prefix`, up to its end;
 * `middle`, from its end to its attributes; `last`, after them) and writes it to the span file with
 * one write, where no Python runs. With glibc, an on_exit handler writes it, in exit(): after
 * Py_FinalizeEx, with the status the process exits with (a SystemExit's code, which no Python code
 * sees once the exception is handled) as its `process.exit.code`: what a parent that is not traced
 * (a shell, an orphan's new parent) saw. Elsewhere, a Py_AtExit callback at the end of Py_FinalizeEx,
 * without it. Not in a forked child that did not arm it (the pid is its armer's), nor where the
 * descriptor is no longer the span file (the program closed it and opened a file of its own that
 * took its number). */
static char finalize_parts[1024];
static size_t finalize_prefix, finalize_middle, finalize_last;
static int finalize_fd = -1;
static pid_t finalize_pid;
static dev_t finalize_dev;
static ino_t finalize_ino;

/* `status`: the exit status, or -1 where it is not known */
static void
write_finalized(int status)
{
    char record[sizeof finalize_parts + 64];
    size_t at = finalize_prefix;
    struct stat file;
    if (finalize_fd < 0 || getpid() != finalize_pid || fstat(finalize_fd, &file) < 0 ||
        file.st_dev != finalize_dev || file.st_ino != finalize_ino)
        return;
    memcpy(record, finalize_parts, at);
    at += snprintf(record + at, 24, "%lld", clock_ns(CLOCK_REALTIME));
    memcpy(record + at, finalize_parts + finalize_prefix, finalize_middle);
    at += finalize_middle;
    if (status < 0)
        at += snprintf(record + at, 8, "{}");
    else  /* the low 8 bits: what wait() gives the parent (sys.exit(256) exits with 0) */
        at += snprintf(record + at, 32, "{\"process.exit.code\":%d}", status & 0xff);
    memcpy(record + at, finalize_parts + finalize_prefix + finalize_middle, finalize_last);
    if (write(finalize_fd, record, at + finalize_last) < 0)
        return;  /* (the process is ending: nothing to tell) */
}

#ifdef __GLIBC__
static void
finalized(int status, void *unused)
{
    write_finalized(status);
}
#define ARM_FINALIZED() on_exit(finalized, NULL)
#else
static void
finalized(void)
{
    write_finalized(-1);
}
#define ARM_FINALIZED() Py_AtExit(finalized)
#endif

/* at_finalized(fd, prefix, middle, last): arm `finalized` for this process (registered once) */
static PyObject *
at_finalized(PyObject *module, PyObject *args)
{
    static int registered;
    int fd;
    const char *prefix, *middle, *last;
    Py_ssize_t prefix_length, middle_length, last_length;
    struct stat file;
    if (!PyArg_ParseTuple(args, "iy#y#y#", &fd, &prefix, &prefix_length, &middle, &middle_length,
                          &last, &last_length))
        return NULL;
    if (prefix_length + middle_length + last_length > (Py_ssize_t)sizeof finalize_parts || fstat(fd, &file) < 0)
        Py_RETURN_FALSE;
    if (!registered) {
        if (ARM_FINALIZED() != 0)
            Py_RETURN_FALSE;
        registered = 1;
    }
    memcpy(finalize_parts, prefix, prefix_length);
    memcpy(finalize_parts + prefix_length, middle, middle_length);
    memcpy(finalize_parts + prefix_length + middle_length, last, last_length);
    finalize_prefix = prefix_length;
    finalize_middle = middle_length;
    finalize_last = last_length;
    finalize_fd = fd;
    finalize_pid = getpid();
    finalize_dev = file.st_dev;
    finalize_ino = file.st_ino;
    Py_RETURN_TRUE;
}

/* SIGTERM's grace (process.py, _install_sigterm): untraced, SIGTERM's default action kills the
 * process at once; the agent's Python handler, which flushes first, runs only once the main thread is
 * back in the interpreter, so a process in a long C call that checks no signal (a hash of millions of
 * rounds, a C library's loop) lived on until the call returned. This C handler, in front of CPython's, arms a
 * one-shot timer at the signal: if the Python handler has not begun when it fires
 * (sigterm_handling() disarms it), the process dies of SIGTERM then, as untraced but `grace` late,
 * without its last flush. Only while the program has left SIGTERM's default action (its own handler
 * runs when the interpreter can run it, traced or not: sigterm_grace(0)). A forked child makes a
 * timer of its own (POSIX timers are not inherited: the pid says whose the timer is). */
#ifdef __linux__
static struct sigaction python_sigterm;  /* CPython's handler, which makes the Python one run */
static timer_t sigterm_timer;
static pid_t sigterm_timer_pid;
static long long sigterm_grace_ns;  /* 0: off */
static volatile sig_atomic_t sigterm_grace_on;

static void
on_sigterm(int signum, siginfo_t *info, void *context)
{
    int own_timer = getpid() == sigterm_timer_pid;
    if (info != NULL && info->si_code == SI_TIMER) {  /* the grace is over: die of it, as untraced */
        if (sigterm_grace_on && own_timer) {
            signal(SIGTERM, SIG_DFL);
            raise(SIGTERM);  /* (blocked in this handler: delivered as it returns) */
        }
        return;
    }
    if (sigterm_grace_on && own_timer) {
        struct itimerspec grace = {{0, 0}, {sigterm_grace_ns / 1000000000, sigterm_grace_ns % 1000000000}};
        timer_settime(sigterm_timer, 0, &grace, NULL);
    }
    if (python_sigterm.sa_flags & SA_SIGINFO)
        python_sigterm.sa_sigaction(signum, info, context);
    else if (python_sigterm.sa_handler != SIG_DFL && python_sigterm.sa_handler != SIG_IGN)
        python_sigterm.sa_handler(signum);
}
#endif

/* sigterm_grace(grace_ns): put on_sigterm in front of the handler installed now (CPython's), with a
 * timer of grace_ns, once; afterwards, sigterm_grace(0) turns the grace off and any other value on.
 * Returns whether it is in place. */
static PyObject *
sigterm_grace(PyObject *module, PyObject *arg)
{
#ifdef __linux__
    long long grace_ns = PyLong_AsLongLong(arg);
    if (grace_ns == -1 && PyErr_Occurred())
        return NULL;
    if (sigterm_grace_ns == 0 || getpid() != sigterm_timer_pid) {  /* none yet, or a forked child's first */
        struct sigevent event;
        struct sigaction current, ours;
        sigterm_grace_on = 0;
        if (grace_ns <= 0)
            Py_RETURN_FALSE;
        memset(&event, 0, sizeof event);
        event.sigev_notify = SIGEV_SIGNAL;
        event.sigev_signo = SIGTERM;
        if (sigaction(SIGTERM, NULL, &current) != 0 || timer_create(CLOCK_MONOTONIC, &event, &sigterm_timer) != 0)
            Py_RETURN_FALSE;
        if (!((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_sigterm)) {  /* (a child has ours) */
            ours = current;
            ours.sa_flags |= SA_SIGINFO;
            ours.sa_sigaction = on_sigterm;
            if (sigaction(SIGTERM, &ours, NULL) != 0) {
                timer_delete(sigterm_timer);
                Py_RETURN_FALSE;
            }
            python_sigterm = current;
        }
        sigterm_grace_ns = grace_ns;
        sigterm_timer_pid = getpid();
    }
    sigterm_grace_on = grace_ns > 0;
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

/* sigterm_handling(): the Python handler has begun (it flushes, then the process dies): no grace */
static PyObject *
sigterm_handling(PyObject *module, PyObject *unused)
{
#ifdef __linux__
    if (sigterm_grace_ns && getpid() == sigterm_timer_pid) {
        struct itimerspec off = {{0, 0}, {0, 0}};
        timer_settime(sigterm_timer, 0, &off, NULL);
    }
#endif
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", install, METH_O, "install(importtime) -> the C wrapper of importlib's _find_and_load"},
    {"current_span", current_span, METH_NOARGS, "current_span() -> tracer.current, read from the twin's imports under way"},
    {"pop_import", pop_import, METH_O, "pop_import(frame): importtime._pop, on the twin's imports under way"},
    {"context_var", context_var, METH_O, "context_var(name) -> contextvars.ContextVar(name, default=None)"},
    {"span_ids", span_ids, METH_O, "span_ids(start) -> an iterator of '%016x' % n for n from start up"},
    {"runqueue_ns", runqueue_ns, METH_NOARGS, "runqueue_ns() -> this thread's time queued for a CPU, or None"},
    {"import_line", (PyCFunction)(void (*)(void))import_line, METH_FASTCALL, "import_line(frame, name, end, extra) -> tracer.import_line's record"},
    {"header_putter", header_putter, METH_O,
     "header_putter(reference) -> put_traceparent(lines, header): http.client's header lines given our traceparent"},
    {"span_writers", (PyCFunction)(void (*)(void))span_writers, METH_FASTCALL,
     "span_writers(Span, format, encode, UNSET) -> (new_span, span_line, encode): Span(...), tracer._format and spanfile.encode, in C for the common case"},
    {"handle_with_traceback", (PyCFunction)(void (*)(void))handle_with_traceback, METH_FASTCALL,
     "handle_with_traceback(exc, tb): the exception being handled, exc, re-raised with traceback tb by a bare raise"},
    {"sleep_after_signals", (PyCFunction)(void (*)(void))sleep_after_signals, METH_FASTCALL,
     "sleep_after_signals(sleep, seconds): time.sleep(seconds) with no gap where a signal taken waits for its end"},
    {"sleeper", (PyCFunction)(void (*)(void))sleeper, METH_FASTCALL,
     "sleeper(sleep, record, before_block, threshold_ns, tracer_globals) -> time.sleep's wrapper, timed, with no frame of its own"},
    {"frame_at", frame_at, METH_O, "frame_at(depth) -> sys._getframe(depth), without its audit event"},
    {"code_of", code_of, METH_O, "code_of(obj) -> the code of a function, a method or a frame, else None (no audit event)"},
    {"frame_of", frame_of, METH_O, "frame_of(traceback) -> traceback.tb_frame, without its audit event"},
    {"read_file", (PyCFunction)(void (*)(void))read_file, METH_FASTCALL,
     "read_file(path, offset, length) -> up to length bytes of the file from offset (no audit event)"},
    {"open_fd", (PyCFunction)(void (*)(void))open_fd, METH_FASTCALL,
     "open_fd(path, flags, mode) -> os.open(path, flags, mode), without its audit event"},
    {"getenv", env_get, METH_O, "getenv(name) -> the process environment's value (what children inherit), or None"},
    {"setenv", (PyCFunction)(void (*)(void))env_set, METH_FASTCALL,
     "setenv(name, value): the process environment's name set, or removed for None; os.environ left as it is"},
    {"wait_cpu", (PyCFunction)(void (*)(void))wait_cpu, METH_FASTCALL,
     "wait_cpu(pid, options) -> (pid, status, the reaped child's user + system CPU ns): os.waitpid with wait4's rusage"},
    {"children_cpu", children_cpu, METH_NOARGS, "children_cpu() -> RUSAGE_CHILDREN's user + system CPU ns"},
    {"exec_code", (PyCFunction)(void (*)(void))exec_code, METH_FASTCALL,
     "exec_code(code, globals): exec(code, globals), without its audit event"},
    {"gc_watcher", gc_watcher, METH_O, "gc_watcher(threshold_ns) -> gc.callbacks' callback, counting the collector's passes from nothing"},
    {"sigterm_grace", sigterm_grace, METH_O,
     "sigterm_grace(grace_ns) -> whether SIGTERM's C handler is in front of CPython's, its grace on (0: off)"},
    {"sigterm_handling", sigterm_handling, METH_NOARGS, "sigterm_handling(): the Python SIGTERM handler has begun"},
    {"at_finalized", at_finalized, METH_VARARGS,
     "at_finalized(fd, prefix, middle, last) -> whether the interpreter.finalize record is armed for the process's exit"},
    {"gc_passes", gc_passes, METH_NOARGS,
     "gc_passes() -> ((passes by generation), (their ns), [(start_ns, end_ns, generation, collected, span)], dropped)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "_importtime", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__importtime(void)
{
    PyObject *module;
    int c;
    if (PyType_Ready(&span_ids_type) < 0 || (module = PyModule_Create(&definition)) == NULL)
        return NULL;
    signal_thread = PyThread_get_thread_ident();
    for (c = 0x20; c < 0x7f; c++)
        plain_char[c] = c != '"' && c != '\\';
    if ((empty = PyUnicode_InternFromString("")) == NULL ||
        (zero = PyLong_FromLong(0)) == NULL || (one = PyLong_FromLong(1)) == NULL || (s_in_startup = PyUnicode_InternFromString("_in_startup")) == NULL ||
        (s_modules = PyUnicode_InternFromString("modules")) == NULL ||
        (s_root = PyUnicode_InternFromString("_root")) == NULL ||
        (s_deferred = PyUnicode_InternFromString("deferred")) == NULL || (s_child_ns = PyUnicode_InternFromString("child_ns")) == NULL ||
        (s_spec = PyUnicode_InternFromString("__spec__")) == NULL || (s_initializing = PyUnicode_InternFromString("_initializing")) == NULL ||
        (s_flush_due_ns = PyUnicode_InternFromString("_flush_due_ns")) == NULL ||
        (s_flusher_started = PyUnicode_InternFromString("_flusher_started")) == NULL ||
        (s_flusher_from_ns = PyUnicode_InternFromString("_flusher_from_ns")) == NULL ||
        (s_id_text = PyUnicode_InternFromString("_id_text")) == NULL || (s_span_id = PyUnicode_InternFromString("span_id")) == NULL ||
        (s_trace_id = PyUnicode_InternFromString("trace_id")) == NULL ||
        (s_builtins = PyUnicode_InternFromString("__builtins__")) == NULL ||
        (s_generation = PyUnicode_InternFromString("generation")) == NULL ||
        (s_collected = PyUnicode_InternFromString("collected")) == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
