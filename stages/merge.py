"""merge stage: combine label files, drop exact and near duplicates, recompute scores and tiers from the filter.

With ``label.shards`` set it reads the shards' label files (``merge.extra_dir/shard-<i>.jsonl``) in place of
the label stage's, docs/scaling.md."""

from pathlib import Path

from distill import pipeline
from distill.config import section
from distill.stage import stage


@stage
def main(params):
    spec = pipeline.filter_spec(section(params, "filter"))
    label = section(params, "label")
    labels = None if label.shards else Path(label.output_dir) / "labels.jsonl"
    pipeline.merge(section(params, "merge"), spec, labels, dedup=section(params, "dedup"), shards=label.shards)


if __name__ == "__main__":
    main()
