"""prefilter stage: read the corpus, apply the filter's cheap rules, keep what the oracle should see,
once (exact and near duplicates removed, explained in duplicates.jsonl)."""

from distill import pipeline
from distill.config import section
from distill.stage import stage


@stage
def main(params):
    spec = pipeline.filter_spec(section(params, "filter"))
    pipeline.prefilter(section(params, "prefilter"), spec, dedup=section(params, "dedup"))


if __name__ == "__main__":
    main()
