"""Deployment on real devices: a SuperLink on the coordinator host, a SuperNode per device.

- :mod:`simulations.deploy.certs`: CA, server certificate and SuperNode keys (`cryptography`).
- :mod:`simulations.deploy.layout`: what a deployment folder holds and the command lines.
- :mod:`simulations.deploy.processes`: starting and stopping processes by pid.
- :mod:`simulations.deploy.local`: ``sandflower deploy local``, the whole path on loopback.
"""
