"""Progressive rollouts: a feature above serving (inference moves the traffic) and
monitoring (whose window statistics decide each step). The models stay in inference."""
