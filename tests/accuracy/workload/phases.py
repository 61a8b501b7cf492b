"""Functions the accuracy runs make spans of (`selfopt-trace run --target phases:NAME`): phases."""

import truth


def work(record, ms):
    """Known own work: `ms` of CPU."""
    begun = record.begin()
    truth.spin(ms, record)
    record.end(begun, "phase", name="work")


def start_child(record, command, **options):
    """Start a child and return at once: the child outlives this phase."""
    begun = record.begin()
    process = truth.spawn(record, command, **options)
    record.end(begun, "phase", name="start_child")
    return process
