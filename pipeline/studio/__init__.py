"""`swapstream studio`: one local web app for the whole job (facesets, training, conversion),
over a workspace folder; every action in it is a swapstream command run as a job."""
