"""The notebooks' recipes, one thin module per notebook: its knobs per profile (`SIZES`) and the pieces only that
notebook needs. Reusable measurements live in the topic modules (`generation`, `latent`, `anomaly`, `probes`, …);
the models several notebooks share are defined once in `reference`."""
