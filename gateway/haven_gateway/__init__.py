"""The Haven Player API served from LiveStream and Recording custom resources."""
