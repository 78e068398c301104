"""merge stage: combine label files, drop exact and near duplicates, recompute scores and tiers from the filter."""

from pathlib import Path

from distill import pipeline
from distill.config import section
from distill.stage import stage


@stage
def main(params):
    spec = pipeline.filter_spec(section(params, "filter"))
    labels = Path(section(params, "label").output_dir) / "labels.jsonl"
    pipeline.merge(section(params, "merge"), spec, labels, dedup=section(params, "dedup"))


if __name__ == "__main__":
    main()
