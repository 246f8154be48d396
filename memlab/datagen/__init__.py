"""Data generators behind `make_data.py`: pure functions that return rows; the script writes them.

Modules: `wordlists` and `known_facts` (vocabulary and a bank of true facts), `grammar` (a small
sentence grammar for the corpus and documents), `facts`, `documents`, `recognition`, `membership` (the `mia` subcommand), `cloze`,
`convert` (external formats to ours), `leakage` (the train/held-out overlap check) and `common`
(seeded sub-streams, de-duplication, the manifest and the atomic dataset writer).

Every generator takes an explicit seed and draws only from `random.Random` instances it owns, so the
same seed gives byte-identical files and nothing depends on global random state or hash order.
"""
