"""split stage: seeded, tier-stratified train / val / test in chat format, with a balance report;
near-duplicate clusters stay in one split."""

from pathlib import Path

from distill import pipeline
from distill.config import section
from distill.stage import stage


@stage
def main(params):
    spec = pipeline.filter_spec(section(params, "filter"))
    merged = Path(section(params, "merge").output_dir) / "labels.jsonl"
    pipeline.split(section(params, "split"), spec, merged, dedup=section(params, "dedup"))


if __name__ == "__main__":
    main()
