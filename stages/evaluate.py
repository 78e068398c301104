"""evaluate stage: the student and the baselines against the oracle on the test split, with intervals and costs."""

from distill import pipeline
from distill.config import section
from distill.stage import stage


@stage
def main(params):
    spec = pipeline.filter_spec(section(params, "filter"))
    split_dir = section(params, "split").output_dir
    model_dir = section(params, "train").output_dir
    pipeline.evaluate(section(params, "evaluate"), spec, split_dir, model_dir, oracle=section(params, "oracle"))


if __name__ == "__main__":
    main()
