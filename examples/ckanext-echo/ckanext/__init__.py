# A namespace shared by every ckanext-* distribution (pkgutil style, as CKAN extensions do).
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
