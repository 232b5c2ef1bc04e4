"""Still images: reading and writing them (`formats`), finding and planning a folder job (`folder`),
and running it (`job`)."""
