print("warmstart")
