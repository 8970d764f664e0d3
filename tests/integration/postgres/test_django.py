"""Transactional enqueue inside Django's ``transaction.atomic()``, on Django's own connection."""

from __future__ import annotations

from collections.abc import Iterator

import django
import pytest
from django.conf import settings
from django.db import connection, transaction

import errands
from tests.support import POSTGRES_URL


class RollbackError(Exception):
    """Raised to leave an atomic block with a rollback."""


@pytest.fixture
def django_db() -> Iterator[None]:
    if not settings.configured:
        settings.configure(
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": "test",
                    "USER": "postgres",
                    "HOST": "127.0.0.1",
                    "PORT": "5432",
                }
            },
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    yield
    connection.close()


@pytest.fixture
def app(pg_schema: str) -> Iterator[errands.App]:
    app = errands.App(POSTGRES_URL, schema=pg_schema, auto_migrate=True)
    app.migrate()
    yield app
    app.close()


def test_enqueue_joins_djangos_atomic_block(django_db: None, app: errands.App) -> None:
    @app.job()
    def receipt(order: int) -> int:
        return order

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")  # Django's transaction is open
        job = receipt.enqueue(order=1, conn=connection)
        assert app.get_job(job.id) is None, "visible to another connection before commit"
    assert app.get_job(job.id) is not None, "committed with Django's transaction"

    with pytest.raises(RollbackError), transaction.atomic():
        gone = receipt.enqueue(order=2, conn=connection)
        raise RollbackError
    assert app.get_job(gone.id) is None, "rolled back with Django's transaction"

    assert app.drain() == {"completed": 1}
    done = app.get_job(job.id)
    assert done is not None and done.result == 1
