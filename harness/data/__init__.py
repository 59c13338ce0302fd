"""Instruction data: loaders for user files, and dvbench's own generated dataset."""
