//! ard-actors: the generic actor runtime of ard-pipeline (no tch, no ML).
