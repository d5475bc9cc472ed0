"""Put a T2A-pretrained audio tower into a joint model: `SkyReelsV4AudioTransformer1DModel` + joint
`SkyReelsV4Transformer3DModel` -> joint model with that audio tower (fresh, zero-initialised cross-modal blocks).

This is `SkyReelsV4Transformer3DModel.from_video_and_audio`: the audio DiT's parameter names map one to one onto the
joint model's audio parts (`tower_key_to_joint`). With the cross-modal blocks at zero, the result reproduces the video source's video prediction and the
audio DiT's audio prediction.

    python conversion/merge_audio_tower.py --joint path/to/joint --audio path/to/t2a --output out/joint-merged
"""

import argparse
import os
import sys

from skyreels_diffusers import SkyReelsV4AudioTransformer1DModel, SkyReelsV4Transformer3DModel


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DTYPES, save_atomically  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joint", required=True, help="SkyReelsV4Transformer3DModel folder (video source)")
    parser.add_argument("--audio", required=True, help="SkyReelsV4AudioTransformer1DModel folder (T2A)")
    parser.add_argument("--output", required=True, help="new folder for the merged joint model")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    args = parser.parse_args(argv)
    try:
        for name, path in (("--joint", args.joint), ("--audio", args.audio)):
            if not os.path.isfile(os.path.join(path, "config.json")):
                raise ValueError(f"`{name}` {path!r} is not a model folder (no config.json).")
        joint = SkyReelsV4Transformer3DModel.from_pretrained(args.joint, use_safetensors=True)
        audio = SkyReelsV4AudioTransformer1DModel.from_pretrained(args.audio, use_safetensors=True)
        merged = SkyReelsV4Transformer3DModel.from_video_and_audio(joint, audio)
        save_atomically(merged.to(DTYPES[args.dtype]), args.output)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
