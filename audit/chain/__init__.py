"""Tamper evidence for the audit trail: a MAC on every event, a sealed chain over all of them, and
the chain's head anchored outside the database (audit/anchors.py).

Three layers, so that the write path never takes a global lock and the database alone is never the
only witness of itself:

1. **Every event carries its own MAC**, computed by the application before the insert:
   HMAC-SHA256, keyed from settings (`AUDIT_HMAC_KEY`, else derived from `SECRET_KEY`; never in the
   database), over the event's **id** (its position, drawn from the table's sequence first) and a
   canonical serialisation of every field that says what happened. Writers do not wait for each
   other. A row edited or inserted with SQL, without the key, has a MAC that does not match; an
   exact copy of a genuine event under another id does not match either.
2. **A sealer chains the events in order** (`seal_pending`, a beat task every few seconds, and the
   first step of `audit_verify`). Under one advisory lock it takes the events not sealed yet, in id
   order, checks each event's MAC (a forged one is refused and reported, never sealed) and appends
   one `AuditSeal` row per event: a sequence number and the chained MAC
   HMAC(key, previous chained MAC | seq | event id | event MAC). It continues from the newest seal,
   or from the last archive's signed checkpoint when no seal is newer; it never starts a new chain
   from genesis over a history (an anchor in a witness, or events older than could have gone
   unsealed), and it never seals an event that was already old when the head was sealed (its seal
   was removed, or it was slipped in later): those wait for an operator (`audit_accept_unsealed`).
3. **Anchors**: the signed head (seq, chained MAC) is written every few tens of seconds to the SIEM
   stream and to witnesses outside the database (an append-only file, an S3 bucket with Object
   Lock). Verification checks the database against the newest anchor of every witness.

Verification always walks the whole trail, from genesis or the last archive's checkpoint, and
pinpoints, per kind: an event whose content changed (`modified`), an event deleted (`deleted`), an
event inserted or copied behind the application's back (`forged`), events renumbered (`reordered`),
seals edited, deleted or reordered (`chain_broken`, `gap`), seals left below an archive
(`archived`), events never sealed (`unsealed`), and a database that no longer holds what a witness
anchored (`anchor`: the anchored seal missing or different, the head below it) or a witness that
cannot be read (`witness`).

MAC format 2 (migration audit/0007): the canonical JSON list is the event id followed by the
fields. Format 1 (the 15 fields alone) is kept only to migrate and to check checkpoints taken
before it (`legacy_event_mac`).

The package's modules, in layers: `mac` (keys and MACs), `sealing` (the head and the sealer),
`verification` (the walk, anchors, checkpoints), `retention` (archives). Everything is re-exported
here, so callers keep writing `chain.seal_pending()`.
"""

from __future__ import annotations

from .mac import (  # noqa: F401
    _DECODE,
    _ENCODE,
    _ZERO,
    BATCH,
    COLUMNS,
    FIELDS,
    GENESIS,
    SEAL_LOCK,
    _at,
    _ip,
    _key,
    _normalise,
    archive_signature,
    canonical,
    canonical_values,
    chain_mac,
    event_mac,
    key,
    legacy_event_mac,
    max_delay,
    row_of,
)
from .retention import (  # noqa: F401
    archive,
)
from .sealing import (  # noqa: F401
    ACCEPT_LOCK_WAIT,
    LATE_WINDOW,
    SEAL_THROUGH_WAIT,
    SELECT_UNSEALED,
    UNSEALED_ALL,
    Head,
    History,
    SealResult,
    _archive_row,
    _genesis_refused,
    _head_of,
    _seal_locked,
    genesis_evidence,
    head,
    last_archive,
    seal_pending,
    seal_through,
    unsealed_candidates,
    unsealed_events_accept,
)
from .verification import (  # noqa: F401
    SEGMENT,
    UNSEALED,
    WALK,
    Problem,
    VerifyResult,
    Walked,
    _against_anchor,
    _against_legacy_checkpoint,
    _check_seals,
    _walk,
    checkpoint,
    checkpoint_valid,
    legacy_checkpoint_signature,
    verify,
    verify_and_record,
)
