"""merge stage: combine label files, drop exact duplicates, recompute scores and tiers from the filter."""

from distill import pipeline
from distill.config import section
from distill.stage import stage


@stage
def main(params):
    spec = pipeline.filter_spec(section(params, "filter"))
    pipeline.merge(section(params, "merge"), spec)


if __name__ == "__main__":
    main()
