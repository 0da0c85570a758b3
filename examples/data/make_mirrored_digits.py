"""Write scikit-learn's bundled digits, mirrored left to right, as a folder of PNG images:
one subfolder per class (0 … 9), as `transferlab`'s `kind = "images"` (and
`keras.utils.image_dataset_from_directory`) read them. No download.

    python examples/data/make_mirrored_digits.py [FOLDER]
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "mirrored_digits"
    digits = load_digits()
    pixels = np.clip(digits.images[:, :, ::-1] * 16, 0, 255).astype(np.uint8)  # 0…16 → 0…255, mirrored
    for index, (image, label) in enumerate(zip(pixels, digits.target)):
        path = folder / str(label) / f"{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    print(f"wrote {len(pixels)} images to {folder}")


if __name__ == "__main__":
    main()
