import FuzzSupport

FuzzInput.run()
