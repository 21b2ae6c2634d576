# Modes git cannot carry; run in the build context before each build.
chmod 0600 dir/one
chmod 0750 dir/sub
chmod 0711 dir/sub/subsub
