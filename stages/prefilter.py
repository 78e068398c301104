"""prefilter stage: read the corpus, apply the filter's cheap rules, keep what the oracle should see."""

from distill import pipeline
from distill.config import section
from distill.stage import stage


@stage
def main(params):
    spec = pipeline.filter_spec(section(params, "filter"))
    pipeline.prefilter(section(params, "prefilter"), spec)


if __name__ == "__main__":
    main()
