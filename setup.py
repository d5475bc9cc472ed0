from setuptools import find_packages, setup


# torch is listed with a range that the CPU build `torch==2.13.0` satisfies; install torch first
# (see README) so pip does not pull a multi-GB CUDA build to satisfy a bare requirement.
install_requires = [
    "torch>=2.5,<2.16",
    "diffusers>=0.42.1,<0.43",
    "transformers>=5.0,<6",
    "accelerate>=1.0",
    "safetensors>=0.4",
    "huggingface_hub>=1.0",
    "peft>=0.17",
    "imageio>=2.30",
    "imageio-ffmpeg>=0.5",
    "av>=14",
    "numpy",
    "Pillow",
    "tqdm",
]

setup(
    name="skyreels-diffusers",
    version="0.1.0.dev0",
    description="SkyReels-V4 (joint video + audio generation, inpainting, editing) for Hugging Face Diffusers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require={
        # gradio + playwright: the demo in examples/gradio_app and its browser test, which drives the system's
        # Chromium (Debian package `chromium`, see .ci/run); `playwright install` is never needed. ruff is pinned:
        # tests/test_code_style.py checks the layout it writes, which changes between releases. hypothesis: the
        # property-based tests of the pipelines' arguments. pytest-xdist: the suite runs on every core (`-n auto`).
        "test": [
            "pytest>=8",
            "pytest-timeout",
            "pytest-xdist>=3",
            "gradio>=6.0,<7",
            "playwright>=1.49,<2",
            "ruff==0.17.6",
            "hypothesis>=6",
        ],
    },
    entry_points={"console_scripts": ["skyreels-v4=skyreels_diffusers.cli:main"]},
)
