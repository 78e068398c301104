"""snapshot stage (optional, for a database source; README, Input): copy the rows of prefilter.source
into the file prefilter.input, which the prefilter stage then reads and DVC tracks."""

from distill import pipeline
from distill.config import section
from distill.stage import stage


@stage
def main(params):
    pipeline.snapshot(section(params, "prefilter"))


if __name__ == "__main__":
    main()
