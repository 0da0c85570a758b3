"""Write `clinics.csv`: a made-up table of patients from two clinics, for `csv_example.toml`.

Each row is a patient (age, BMI, blood pressure, glucose, smoker) and whether they turned
out `healthy` or `at risk`. The two clinics see different populations (the southern one
older and heavier) and risk depends on the same measurements with somewhat different
weights: a shifted population, the classic case for transfer. Run it again to recreate
the file byte for byte (a fixed seed): `python examples/data/make_clinics.py`.
"""

from pathlib import Path

import numpy as np
import pandas as pd

ROWS_PER_CLINIC = {"north": 500, "south": 300}


def clinic(name: str, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    south = name == "south"
    age = rng.normal(58 if south else 45, 12, rows).clip(18, 95).round()
    bmi = rng.normal(29 if south else 26, 4, rows).clip(15, 50).round(1)
    pressure = (105 + 0.5 * age + 0.8 * bmi + rng.normal(0, 10, rows)).round()
    glucose = (70 + 0.3 * age + 1.2 * bmi + rng.normal(0, 12, rows)).round()
    smoker = rng.random(rows) < (0.18 if south else 0.28)
    weights = np.array([0.05, 0.12, 0.03, 0.04, 0.9]) * (np.array([1.2, 0.8, 1.0, 1.3, 1.0]) if south else 1.0)
    features = np.stack([age - 50, bmi - 27, pressure - 140, glucose - 110, smoker], axis=1)
    risk = 1 / (1 + np.exp(-(features @ weights + rng.normal(0, 0.5, rows))))
    outcome = np.where(rng.random(rows) < risk, "at risk", "healthy")
    return pd.DataFrame({"age": age.astype(int), "bmi": bmi, "blood_pressure": pressure.astype(int),
                         "glucose": glucose.astype(int), "smoker": smoker, "clinic": name, "outcome": outcome})


def main() -> Path:
    rng = np.random.default_rng(2026)
    table = pd.concat([clinic(name, rows, rng) for name, rows in ROWS_PER_CLINIC.items()], ignore_index=True)
    path = Path(__file__).with_name("clinics.csv")
    table.to_csv(path, index=False)
    return path


if __name__ == "__main__":
    print(f"wrote {main()}")
