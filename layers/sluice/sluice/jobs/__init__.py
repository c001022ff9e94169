"""Durable jobs: one lifecycle (record, store, transitions, ownership, listing, cancel, idempotency,
announcements) that every kind of job plugs into. What is particular to a kind lives in its folder
under sluice.jobs.kinds, registered once in sluice.jobs.kinds."""
