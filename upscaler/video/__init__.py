"""Video: probe and decode the source (`probe`, `decode`), plan a job (`plan`), encode upscaled frames
(`encode`, `writer`) into parts that survive a crash (`resume/`), mux the parts with the source's other
streams (`mux/`), and the job that ties them together (`job`, telling its caller through `events`)."""
