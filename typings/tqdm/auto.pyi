# Minimal stub: tqdm.auto picks the notebook or terminal bar; same interface.
from tqdm import tqdm as tqdm
