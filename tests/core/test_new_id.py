"""Row ids: random version 4 UUIDs, drawn from the OS's CSPRNG in blocks per thread."""

from __future__ import annotations

import os
import threading
import uuid

from app.core import database
from app.core.database import new_id


def test_ids_are_canonical_version_4_uuids_and_do_not_repeat() -> None:
    ids = [new_id() for _ in range(3 * 256 + 7)]  # more than one block
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case, hyphenated: the form the database holds
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_threads_draw_from_blocks_of_their_own() -> None:
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(into: list[str]) -> None:
        into.extend(new_id() for _ in range(1000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [text for into in drawn for text in into]
    assert len(set(every)) == len(every) == 8000


def test_a_forked_child_does_not_reuse_the_ids_left_in_its_parents_block() -> None:
    new_id()  # the parent holds a block with ids left in it
    before = database._ID_SOURCE.offset
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child, as a Celery prefork worker would be
        try:
            os.write(write, ",".join(new_id() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        from_child = pipe.read().split(",")
    from_parent = [new_id() for _ in range(3)]
    assert database._ID_SOURCE.offset == before + 3 * 16  # the parent's block was not replaced
    assert not set(from_child) & set(from_parent)
