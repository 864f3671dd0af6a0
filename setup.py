from glob import glob

from setuptools import find_packages, setup

package_name = 'adawm_planner'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=[package_name, package_name + '.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.xml')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
        ('share/' + package_name + '/rviz', glob('rviz/*.rviz')),
        *[('share/' + package_name + '/' + d, glob(d + '/*')) for d in glob('checkpoints/*')],
    ],
    python_requires='>=3.10',
    zip_safe=False,
    maintainer='AdaWM developers',
    maintainer_email='dev@adawm.invalid',
    description='World-model planning for autonomous driving with mismatch-aware LoRA adaptation (ROS 2).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'adawm = adawm_planner.cli:main',
            'planner_node = adawm_planner.nodes.planner_node:main',
            'adaptation_node = adawm_planner.nodes.adaptation_node:main',
            'sim_bridge_node = adawm_planner.nodes.sim_bridge_node:main',
        ],
    },
)
