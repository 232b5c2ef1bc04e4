"""The final mux: the parts' video with the source's other streams (`output`), which streams go and how
(`streams`), their packets in time order (`packets`), metadata tags (`tags`), and the conversion of
streams the output container cannot hold (`transcode`)."""
