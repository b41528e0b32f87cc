"""athar benchmarks: ``python -m bench [--only NAME] [--db sqlite|postgres|both] [--quick]``.

Every performance claim in ``docs/performance.md`` comes from here. The benchmarks drive a real
``athar serve`` over HTTP from separate load-generator processes (appends, lookups, batch commissioning),
or call the ledger in-process where the claim is about the ledger itself (proofs, audit verify, storage),
and report each figure next to the CPU floor measured on the same machine (``--only floor``).

Nothing here is a test: no figure is asserted. Targets are printed beside the figures, never enforced.
"""
