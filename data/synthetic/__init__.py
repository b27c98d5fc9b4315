"""The shipped synthetic study (CSV files, truth.json and its data card), installed as package data."""
