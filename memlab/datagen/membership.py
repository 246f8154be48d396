"""Members / non-members for membership inference, with repeated canaries.

Members and non-members are disjoint draws from one pool (a de-duplicated corpus, or fact statements
rendered from novel facts), so they share a distribution. Canaries: for each c in `canary_copies`,
`canaries_per_copy` members appear c times in train.jsonl (copies spread through the file by a seeded
shuffle). `canary_copies` on every member says how many times it is in train.jsonl (1 for an
ordinary member); non-members have 0. `canary` is true for the chosen canaries.
"""
from __future__ import annotations

from typing import Sequence

from memlab.datagen import facts as facts_mod
from memlab.datagen.common import sub_rng
from memlab.io import DataError


def fact_statements(n: int, seed: int) -> list[dict]:
    """`n` novel person facts as one plain statement each (`fact_id` kept), template chosen per fact."""
    facts = facts_mod.make_facts(seed, n_names=n, n_objects=0)
    rng = sub_rng(seed, "mia:templates")
    rows = []
    for f in facts:
        template = rng.choice(facts_mod.STATEMENT_TEMPLATES)
        rows.append({"id": f.fact_id, "fact_id": f.fact_id, "text": template.format(**f.fields())})
    return rows


def make_mia(pool: Sequence[dict], n_members: int, n_nonmembers: int, canary_copies: Sequence[int],
             canaries_per_copy: int, seed: int, id_field: str = "source_id") -> dict[str, list[dict]]:
    """`{"members.jsonl", "nonmembers.jsonl", "train.jsonl"}` rows from `pool` rows (`id`, `text`).

    `id_field` names the column that carries the pool row's id (`source_id`, or `fact_id` for facts).
    """
    rng = sub_rng(seed, "mia")
    need = n_members + n_nonmembers
    if need > len(pool):
        raise DataError(f"--n_members + --n_nonmembers = {need} but the source has only {len(pool)} "
                        "distinct texts")
    picks = rng.sample(range(len(pool)), need)
    member_rows = [pool[i] for i in picks[:n_members]]
    nonmember_rows = [pool[i] for i in picks[n_members:]]
    copies = [1] * n_members
    canary = [False] * n_members
    chosen = rng.sample(range(n_members), len(canary_copies) * canaries_per_copy)
    for slot, idx in enumerate(chosen):
        copies[idx] = canary_copies[slot // canaries_per_copy]
        canary[idx] = True
    members, train = [], []
    for i, row in enumerate(member_rows):
        member_id = f"member-{i:04d}"
        members.append({"id": member_id, id_field: row["id"], "text": row["text"], "canary_copies": copies[i],
                        "canary": canary[i]})
        for c in range(copies[i]):
            train.append({"id": f"{member_id}-copy{c:02d}", id_field: row["id"], "member_id": member_id,
                          "text": row["text"]})
    rng.shuffle(train)
    nonmembers = [{"id": f"nonmember-{i:04d}", id_field: row["id"], "text": row["text"], "canary_copies": 0,
                   "canary": False} for i, row in enumerate(nonmember_rows)]
    return {"train.jsonl": train, "members.jsonl": members, "nonmembers.jsonl": nonmembers}
