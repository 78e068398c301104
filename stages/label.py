"""label stage: ask the oracle about every record that passed the prefilter (cached, validated, resumable)."""

from pathlib import Path

from distill import pipeline
from distill.config import section
from distill.stage import stage


@stage
def main(params):
    spec = pipeline.filter_spec(section(params, "filter"))
    prefilter = section(params, "prefilter")
    pipeline.label(
        section(params, "label"), section(params, "oracle"), spec, Path(prefilter.output_dir) / "passed.jsonl"
    )


if __name__ == "__main__":
    main()
