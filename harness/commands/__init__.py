"""dvbench's commands, one module each: ``add(commands)`` declares its arguments and ``main(args,
console)`` runs it."""
