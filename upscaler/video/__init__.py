"""Video: probe and decode the source (`probe`), plan a job (`plan`), encode upscaled frames into parts
(`encode`, `parts`) recorded in a journal (`journal`) under a lock (`lock`), mux the parts with the
source's other streams (`mux`), and the job that ties them together (`job`, telling its caller through
`events`)."""
