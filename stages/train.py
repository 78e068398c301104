"""train stage: fit the configured student (TF-IDF + ridge, a LoRA + head encoder, or LoRA on a small causal LM)."""

from distill import pipeline
from distill.config import section
from distill.stage import stage


@stage
def main(params):
    spec = pipeline.filter_spec(section(params, "filter"))
    split_dir = section(params, "split").output_dir
    pipeline.train(section(params, "train"), section(params, "student"), spec, split_dir)


if __name__ == "__main__":
    main()
