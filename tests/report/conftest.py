from tests.queries.conftest import store, traced_db, traced_store  # noqa: F401  (the same real traced run)
