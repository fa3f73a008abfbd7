"""The Batch API: batch records on disk (`store`), the input file's lines (`lines`) and the
one task that answers them behind interactive work (`runner`)."""
